"""What MLflow runs to rebuild the logged aelab model ("model from code": no pickled objects)."""

from mlflow.models import set_model

from aelab.serving.pyfunc import AelabPyfunc

set_model(AelabPyfunc())
