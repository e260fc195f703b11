"""``recstack-simulate``'s failures are one line and an exit status, never a traceback."""

from __future__ import annotations

from pathlib import Path

import pytest

from recstack.cli.simulate import main
from recstack.data.prepared import PreparedSplit


def _exit(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    with pytest.raises(SystemExit) as exited:
        main(argv)
    return int(exited.value.code), capsys.readouterr().err.strip()


def test_bad_arguments_exit_2(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, err = _exit(["clicks.examination_power=-1"], capsys)
    assert code == 2 and err.startswith("recstack-simulate: error: clicks.examination_power=-1")
    code, err = _exit(["no_such_key=1"], capsys)
    assert code == 2 and err.count("\n") == 0
    code, err = _exit([f"api_keys.recommend_file={tmp_path / 'missing'}", "api_keys.recommend_env=NO_SUCH_VAR"], capsys)
    assert code == 2 and "does not exist" in err


def test_an_unreachable_service_exits_1_saying_so(
    capsys: pytest.CaptureFixture[str], serving_split: PreparedSplit, tmp_path: Path
) -> None:
    code, err = _exit(
        [
            "service_url=http://127.0.0.1:9",  # the discard port: nothing listens there
            f"split_path={serving_split.root}",
            f"out={tmp_path}",
            "progress=false",
            "timeout_s=2",
        ],
        capsys,
    )
    assert code == 1
    assert err.startswith("recstack-simulate: error: cannot reach the service at http://127.0.0.1:9")
