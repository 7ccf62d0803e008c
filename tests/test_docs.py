"""The README must stay true to the code where the code can check it."""

from pathlib import Path

from myonode.codes import private_codes
from myonode.config import Settings

README = (Path(__file__).parents[1] / "README.md").read_text()


def test_every_private_code_is_documented():
    for code in private_codes():
        assert f"| `{code.value}` | {code.meaning} |" in README, code.value


def test_every_configuration_section_is_documented():
    for section in Settings.model_fields:
        assert f"\n{section}:" in README, section
