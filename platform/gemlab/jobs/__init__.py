"""Ray Jobs: `gemlab submit` runs `gemlab train` or `gemlab sweep` on a cluster; `gemlab jobs` manages them."""
