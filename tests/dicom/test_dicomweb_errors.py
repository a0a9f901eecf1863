"""DICOMweb input that cannot work is one `error:` line, with any password hidden, before
any work (no server needed: a closed loopback port)."""

from __future__ import annotations

from typer.testing import CliRunner

from lungcad.cli.main import app
from lungcad.dicom.dicomweb import safe_url
from tests.tools.serving import free_port

runner = CliRunner()


def test_an_unreachable_server_is_one_line_naming_it_without_the_password(tmp_path):
    url = f"http://someone:hunter2@127.0.0.1:{free_port()}/dicom-web"
    result = runner.invoke(
        app, ["detect", "--dicomweb", url, "--study", "1.2.3", "--out", str(tmp_path / "out")]
    )
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: http://someone:***@127.0.0.1:")
    assert "cannot connect" in lines[0] and "hunter2" not in result.output
    assert not (tmp_path / "out").exists()


def test_urls_are_shown_with_the_password_hidden():
    assert safe_url("https://u:p%40ss@pacs.example:8443/dicom-web") == (
        "https://u:***@pacs.example:8443/dicom-web"
    )
    assert safe_url("http://pacs:8042/dicom-web") == "http://pacs:8042/dicom-web"


def test_dicomweb_options_need_each_other():
    for args, message in [
        (["--dicomweb", "http://x"], "--dicomweb needs --study"),
        (["scans", "--study", "1.2"], "need --dicomweb"),
        (["scans", "--dicomweb", "http://x", "--study", "1.2"], "one of them"),
    ]:
        result = runner.invoke(app, ["detect", *args])
        assert result.exit_code == 2 and message in result.output, result.output
