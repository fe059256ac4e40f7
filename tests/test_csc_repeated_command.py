"""A command written twice with the same private_seqNum (a commander that saw no ackcmd, its first
write or the answer lost to DDS discovery, writes it again): hs-csc answers the repeat with its
first final answer and does not run the command a second time."""

from __future__ import annotations

from tests.test_csc import COMPLETE, DISABLED, INPROGRESS, STANDBY, CscProcess, SalClient, codes, csc_env  # noqa: F401


def test_repeated_command_is_answered_not_run_again(csc_env: CscProcess) -> None:
    client = SalClient(csc_env.cfg.dds_domain)
    csc_env.start()
    try:
        client.wait_state(STANDBY, timeout=20)
        assert codes(client.command("start", seq=4242, configurationOverride="")) == [INPROGRESS, COMPLETE]
        client.wait_state(DISABLED)
        again = client.command("start", seq=4242, configurationOverride="")
        assert codes(again) == [COMPLETE], again  # the first answer, not NOPERM from running it in DISABLED
        assert again[-1]["result"] == "configuration instance.yaml"
        assert codes(client.command("start", configurationOverride="")) != [COMPLETE]  # a new seqNum is a new command
        client.poll()
        assert client.states() == [STANDBY, DISABLED]
        assert len(client.events["configurationApplied"]) == 1
    finally:
        csc_env.stop()
