"""A second process that holds a SQLite database open, as the user's own program would.

Usage: dbagent.py DB MODE
  MODE "serve": read commands on stdin, one per line, answer one line on stdout:
      count TABLE      -> number of rows
      insert NAME      -> inserts an entity, answers its id
      quit
  MODE "writer": insert entities in a loop, one transaction each, forever; after each
      commit, write the last committed id to DB + ".committed" (atomically).
"""
import os
import sqlite3
import sys

db, mode = sys.argv[1], sys.argv[2]
conn = sqlite3.connect(db, timeout=30, isolation_level=None)
conn.execute("PRAGMA journal_mode=WAL")
conn.execute("PRAGMA busy_timeout=30000")

def insert(name):
    cur = conn.execute(
        "INSERT INTO entities(name, kind, data, updated_at) VALUES (?, 'note', ?, datetime('now'))",
        (name, "x" * 200),
    )
    return cur.lastrowid

if mode == "serve":
    print("ready", flush=True)
    for line in sys.stdin:
        parts = line.split()
        if not parts:
            continue
        if parts[0] == "count":
            n = conn.execute(f"SELECT count(*) FROM {parts[1]}").fetchone()[0]
            print(n, flush=True)
        elif parts[0] == "insert":
            print(insert(parts[1]), flush=True)
        elif parts[0] == "quit":
            break
elif mode == "writer":
    marker = db + ".committed"
    i = 0
    while True:
        rowid = insert(f"w{i}")
        i += 1
        tmp = marker + ".tmp"
        with open(tmp, "w") as f:
            f.write(str(rowid))
        os.replace(tmp, marker)
