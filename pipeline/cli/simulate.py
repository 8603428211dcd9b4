"""`deal-export simulate`: placeholder until the simulator lands (replaced by its owner)."""

from __future__ import annotations

import click


@click.command()
def simulate() -> None:
    """Serve a local Bitrix24 portal simulator.

    \b
    Example:
      deal-export simulate --deals 5000 --port 8024
    """
    raise click.ClickException("the simulator is not built yet")
