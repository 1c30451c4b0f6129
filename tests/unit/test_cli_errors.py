"""What `rtrec` prints when the stack, not the code, is at fault: the message and exit 1, not a traceback."""

from __future__ import annotations

import pytest

from deploy import cli


@pytest.mark.parametrize("replicaset", ["0", "-1", "9"])
def test_a_failover_of_a_replica_set_that_does_not_exist_is_refused_with_a_message(
    replicaset: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """`--replicaset 0` failed the last replica set over (topology[-1]) and recorded it under "0"."""
    assert cli.main(["failover", "--replicaset", replicaset]) == 1
    err = capsys.readouterr().err
    assert f"rtrec failover: FailoverError: no replica set {replicaset}" in err and "Traceback" not in err


def test_verbose_shows_the_traceback() -> None:
    from deploy.failover import FailoverError

    with pytest.raises(FailoverError):
        cli.main(["failover", "--replicaset", "0", "-v"])
