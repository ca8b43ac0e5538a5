"""Health: every dependency checked in the background, each with its own timeout, so that
`/livez`, `/readyz` and `/health` answer from memory even while a dependency hangs (I8)."""
