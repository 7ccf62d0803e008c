"""The README must stay true to the code where the code can check it."""

from pathlib import Path

from myonode.core.config import Settings
from myonode.dicom.codes import private_codes

README = (Path(__file__).parents[1] / "README.md").read_text()


def test_every_private_code_is_documented():
    for code in private_codes():
        assert f"| `{code.value}` | {code.meaning} |" in README, code.value


def test_every_configuration_section_is_documented():
    for section in Settings.model_fields:
        assert f"\n{section}:" in README, section


def test_private_code_meanings_fit_code_meaning():
    for code in private_codes():
        assert len(code.meaning) <= 64, code.value  # CodeMeaning is LO (PS3.5 6.2)
        assert len(code.value) <= 16, code.value  # CodeValue is SH
