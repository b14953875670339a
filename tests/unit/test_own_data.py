"""The README's "Your own data" section: its params file is partial and its commands use it (run end to end as a
system test)."""

from tests.helpers import readme_section


def test_readme_params_are_partial_and_the_commands_use_them():
    params, commands = readme_section()
    assert set(params) == {"data", "pipeline", "oneclass"}
    assert all(c.startswith("aelab ") for c in commands)
    assert [c.split()[1] for c in commands] == ["prepare", "train", "encode", "oneclass", "score"]
