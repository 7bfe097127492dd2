"""``greenhouse keys ...``: the Ed25519 keys control commands are signed with.

    greenhouse keys new     a new signing key and its public key file; prints the key id and the
                            setting to change
    greenhouse keys list    the public keys actuator sites accept (control.public_keys_dir), by id

Rotation, with no command refused on the way:

1. ``greenhouse keys new`` (the new public key lands in the public keys directory);
2. copy ``<key_id>.pub.pem`` into every actuator site's public keys directory: from now on the
   sites accept the old and the new key (they notice the file without a restart);
3. set ``control.signing_key_file`` (``GH_CONTROL__SIGNING_KEY_FILE``) to the new key and redeploy
   the serving side;
4. delete the old key's ``.pub.pem`` at the sites: commands signed by it are refused from then on.
"""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape

from app.config import Settings

app = typer.Typer(name="keys", help="Control-command signing keys (Ed25519): make a new one, list the accepted ones.", no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)
console = Console(stderr=True)  # messages; what scripts read goes to stdout unwrapped (typer.echo)

ConfigOpt = typer.Option(None, "--config", "-c", help="YAML settings file (GH_* environment variables override it).")


def cli_settings(config: Path | None) -> Settings:
    """The settings from ``config`` and the environment; a message and exit code 2 when invalid."""
    from app.config import load_settings

    try:
        return load_settings(config)
    except (FileNotFoundError, ValueError) as exc:
        console.print(f"[red]error:[/red] invalid settings: {escape(str(exc))}")
        raise typer.Exit(2) from None


@app.command()
def new(key_dir: Path | None = typer.Option(None, help="Directory of the new private key (default: the settings' secrets dir, data_dir/secrets)."), config: Path | None = ConfigOpt) -> None:
    """Make a new signing key (mode 0600) and put its public key into the public keys directory."""
    from app.security.signing import new_signing_key, public_keys_dir

    settings = cli_settings(config)
    public_dir = public_keys_dir(settings)
    path, signer = new_signing_key(key_dir or settings.secrets_dir, public_dir)
    typer.echo(f"key id        {signer.key_id}")
    typer.echo(f"private key   {path}")
    typer.echo(f"public key    {public_dir / f'{signer.key_id}.pub.pem'}")
    typer.echo("next: copy the public key into every actuator site's public keys directory, then sign with the new key:")
    typer.echo(f"  GH_CONTROL__SIGNING_KEY_FILE={path}   (control.signing_key_file in a settings file)")
    typer.echo("and once the serving side signs with it, delete the old key's .pub.pem at the sites.")


@app.command("list")
def list_keys(config: Path | None = ConfigOpt) -> None:
    """The public keys actuator sites accept, by key id; the one the serving side signs with is marked."""
    from app.security.signing import LOCAL_SIGNING_KEY_FILE, PUBLIC_KEY_SUFFIX, CommandSigner, CommandVerifier, public_keys_dir

    settings = cli_settings(config)
    directory = public_keys_dir(settings)
    signing_file = settings.control.signing_key_file or settings.secrets_dir / LOCAL_SIGNING_KEY_FILE
    signing_id = CommandSigner.from_file(signing_file).key_id if signing_file.is_file() else None
    verifier = CommandVerifier(directory)
    console.print(f"command public keys in {escape(str(directory))} (key id, file, * = the key the serving side signs with):")
    for key_id in verifier.key_ids:
        typer.echo(f"{key_id}  {directory / f'{key_id}{PUBLIC_KEY_SUFFIX}'}{'  *' if key_id == signing_id else ''}")
    if not verifier.key_ids:
        console.print("no public keys: actuator sites would refuse every command ([bold]greenhouse keys new[/bold] makes one)")
    elif signing_id is not None and signing_id not in verifier.key_ids:
        console.print(f"[yellow]warning:[/yellow] the signing key {signing_id} has no public key here: its commands would be refused")
