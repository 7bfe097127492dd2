"""What an actuator site has applied, kept in a small SQLite file so replay protection survives a
restart: the highest applied sequence per greenhouse and the ids of applied commands that have
not expired yet (an expired command is refused anyway, so its id need not be remembered).

SQLite rather than a JSON file: each update is one durable transaction, and two endpoints on the
same file (two processes driving different greenhouses) do not lose each other's writes.
"""

from __future__ import annotations

import sqlite3
import threading
from datetime import datetime
from pathlib import Path

from app.config import Settings
from app.contracts.command import ControlCommand

_SCHEMA = """
CREATE TABLE IF NOT EXISTS high_water (greenhouse_id TEXT PRIMARY KEY, sequence INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS applied (command_id TEXT PRIMARY KEY, valid_until_s REAL NOT NULL);
CREATE INDEX IF NOT EXISTS applied_by_expiry ON applied(valid_until_s);
"""


class ActuatorState:
    """The replay-protection state of an actuator site, in the SQLite file ``path``."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=30.0)
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA synchronous=FULL")  # an applied command is remembered across a power cut
        self._conn.executescript(_SCHEMA)

    @classmethod
    def from_settings(cls, settings: Settings) -> ActuatorState:
        """The state in ``control.actuator_state_file`` (default ``data_dir/actuator/state.sqlite``)."""
        return cls(settings.control.actuator_state_file or settings.data_dir / "actuator" / "state.sqlite")

    def highest_sequence(self, greenhouse_id: str) -> int | None:
        """The highest sequence applied for ``greenhouse_id``, or None before the first."""
        with self._lock:
            row = self._conn.execute("SELECT sequence FROM high_water WHERE greenhouse_id = ?", (greenhouse_id,)).fetchone()
        return None if row is None else int(row[0])

    def was_applied(self, command_id: str) -> bool:
        """True when a command with this id was applied and has not expired since."""
        with self._lock:
            return self._conn.execute("SELECT 1 FROM applied WHERE command_id = ?", (command_id,)).fetchone() is not None

    def record_applied(self, command: ControlCommand, now: datetime) -> None:
        """Remember ``command`` as applied (its sequence becomes the greenhouse's high-water mark
        if higher) and forget the ids of commands that expired before ``now``; one transaction."""
        if command.sequence is None:
            raise ValueError("an applied command has a sequence")
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                self._conn.execute(
                    "INSERT INTO high_water(greenhouse_id, sequence) VALUES (?, ?) ON CONFLICT(greenhouse_id) DO UPDATE SET sequence = max(sequence, excluded.sequence)",
                    (command.greenhouse_id, command.sequence),
                )
                self._conn.execute("INSERT OR REPLACE INTO applied(command_id, valid_until_s) VALUES (?, ?)", (command.command_id, command.valid_until.timestamp()))
                self._conn.execute("DELETE FROM applied WHERE valid_until_s < ?", (now.timestamp(),))
                self._conn.execute("COMMIT")
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise

    def close(self) -> None:
        """Close the file."""
        with self._lock:
            self._conn.close()
