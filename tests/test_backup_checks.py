"""`callbot backup PATH`: what it says of the copy it wrote, and a copy it must not keep."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from tests.entry import run_main


def test_the_copy_is_as_many_pages_as_it_says(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    with sqlite3.connect(tmp_path / "callbot.db") as con:
        con.execute("CREATE TABLE notes (text)")
        con.executemany("INSERT INTO notes VALUES (?)", [("x" * 2000,)] * 20)
    con.close()
    code, out, err = run_main(["backup", "copy.db"], {"DATABASE_URL": "sqlite:///./callbot.db"},
                              tmp_path, monkeypatch, capsys)
    assert code == 0, err
    with sqlite3.connect(tmp_path / "copy.db") as copy:
        [pages] = copy.execute("PRAGMA page_count").fetchone()
        assert copy.execute("SELECT COUNT(*) FROM notes").fetchone() == (20,)
    copy.close()
    assert pages > 10
    assert out == f"callbot backup: copy.db written ({pages} pages), a consistent copy\n"


def test_a_copy_that_fails_its_integrity_check_is_not_kept(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # A database damaged where SQLite only notices when it looks (an index that no longer matches
    # its table) copies page by page without an error; a copy that would restore the damage is
    # not a backup.
    with sqlite3.connect(tmp_path / "callbot.db") as con:
        con.execute("CREATE TABLE t (x, y)")
        con.execute("CREATE INDEX t_x ON t (x)")
        con.executemany("INSERT INTO t VALUES (?, ?)", [(i, -i) for i in range(50)])
        con.execute("PRAGMA writable_schema = ON")
        con.execute("UPDATE sqlite_master SET sql = 'CREATE INDEX t_x ON t (y)' WHERE name = 't_x'")
    con.close()
    code, out, err = run_main(["backup", "copy.db"], {"DATABASE_URL": "sqlite:///./callbot.db"},
                              tmp_path, monkeypatch, capsys)
    assert code == 2 and out == ""
    assert "the copy failed its integrity check" in err and "missing from index t_x" in err
    assert "nothing was kept" in err
    assert not (tmp_path / "copy.db").exists()


def make_database(path: Path, table: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with sqlite3.connect(path) as con:
        con.execute(f"CREATE TABLE {table} (x)")
    con.close()


def tables_in(path: Path) -> list[str]:
    with sqlite3.connect(path) as con:
        names = [row[0] for row in con.execute("SELECT name FROM sqlite_master")]
    con.close()
    return names


def test_the_database_url_in_dotenv_or_a_file_is_the_one_copied(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # Settings come from the environment, .env or NAME_FILE (README: Settings), for this command
    # too; ./callbot.db, the default, is some older file here.
    make_database(tmp_path / "data" / "callbot.db", "the_real_one")
    make_database(tmp_path / "callbot.db", "an_old_one")
    (tmp_path / ".env").write_text("DATABASE_URL=sqlite:///./data/callbot.db\n")
    code, _, err = run_main(["backup", "copy.db"], {}, tmp_path, monkeypatch, capsys)
    assert code == 0, err
    assert tables_in(tmp_path / "copy.db") == ["the_real_one"]

    (tmp_path / ".env").unlink()
    (tmp_path / "database_url").write_text("sqlite:///./data/callbot.db\n")
    env = {"DATABASE_URL_FILE": str(tmp_path / "database_url")}
    code, _, err = run_main(["backup", "copy2.db"], env, tmp_path, monkeypatch, capsys)
    assert code == 0, err
    assert tables_in(tmp_path / "copy2.db") == ["the_real_one"]

    env["DATABASE_URL"] = "sqlite:///./callbot.db"
    code, _, err = run_main(["backup", "copy3.db"], env, tmp_path, monkeypatch, capsys)
    assert code == 2 and "both DATABASE_URL and DATABASE_URL_FILE are set; keep one" in err
    assert not (tmp_path / "copy3.db").exists()
