"""Ray Jobs: `gemlab submit` runs `gemlab train` or `gemlab sweep` on a cluster; `gemlab jobs` manages them."""

AGENT_WAIT_SECONDS = 30.0  # how long `gemlab submit` waits for the job agent of a head that has just started
