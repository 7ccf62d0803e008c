from pathlib import Path

import pytest

from myonode.core.config import ConfigError, dump_settings, load_settings


def test_defaults_need_no_file():
    settings = load_settings(environ={})
    assert settings.dicom.ae_title == "MYONODE"
    assert settings.dicom.port == 11112
    assert settings.dispatch.destinations == ["calling"]


def test_file_then_environment_override(tmp_path: Path):
    config = tmp_path / "node.yaml"
    config.write_text(
        "dicom:\n  ae_title: SITE1\n  port: 104\npeers:\n  PACS: {host: pacs, port: 104}\n"
    )
    settings = load_settings(
        config, environ={"MYONODE_DICOM__PORT": "11113", "MYONODE_TEST_DATA": "x"}
    )
    assert settings.dicom.ae_title == "SITE1"
    assert settings.dicom.port == 11113
    assert settings.peers["PACS"].host == "pacs"
    assert "ae_title: SITE1" in dump_settings(settings)


def test_config_env_variable_names_the_file(tmp_path: Path):
    config = tmp_path / "node.yaml"
    config.write_text("assemble:\n  quiet_seconds: 5\n")
    assert load_settings(environ={"MYONODE_CONFIG": str(config)}).assemble.quiet_seconds == 5


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("dicom:\n  ae_title: THIS-AE-TITLE-IS-TOO-LONG\n", "dicom.ae_title"),
        ("dicom:\n  port: 70000\n", "dicom.port"),
        ("dicom:\n  prot: 104\n", "dicom.prot"),
        ("- just\n- a list\n", "mapping"),
        ("dicom: [unclosed\n", "not valid YAML"),
    ],
)
def test_invalid_configuration_is_explained(tmp_path: Path, text: str, message: str):
    config = tmp_path / "bad.yaml"
    config.write_text(text)
    with pytest.raises(ConfigError, match=message.replace(".", r"\.")):
        load_settings(config, environ={})
