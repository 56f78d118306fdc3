"""``python -m robodensity.app.cli``: the same command as the ``robodensity`` script."""

from robodensity.app.cli import app

app()
