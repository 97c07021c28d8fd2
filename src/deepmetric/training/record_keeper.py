"""A small record keeper for the logging presets (replaces the unmaintained ``record-keeper`` package).

Records are scalar series grouped by name ("loss_histories", "metric_loss_TripletMarginLoss", an
accuracy group, ...), each point tagged with an x value stored in the column ``~iteration~``.

* :class:`RecordWriter` buffers points and, on ``save_records()``, appends them to one SQLite table
  per group in ``<folder>/logs.db`` (columns ``id``, ``~iteration~``, one per series; new series
  add columns) and rewrites ``<folder>/<group>.csv`` from that table. With ``global_db_path`` the
  same rows also go to a shared database, tagged with ``experiment_name``.
* :class:`RecordKeeper` turns dictionaries of numbers, or of objects that list recordable
  attributes in ``_record_these`` / ``_record_these_stats``, into points; TensorBoard scalars
  (``<group>/<series>``) are written immediately when a ``SummaryWriter`` is given.
"""

import contextlib
import csv
import hashlib
import json
import os
import sqlite3
from collections import defaultdict

import torch

from ..utils import common_functions as c_f

ITERATION = "~iteration~"
MAX_GROUP_NAME = 128


@contextlib.contextmanager
def _database(path, rows_as_dicts=False):
    """A connection that commits on success and is always closed (``with sqlite3.connect`` is not)."""
    conn = sqlite3.connect(path)
    if rows_as_dicts:
        conn.row_factory = sqlite3.Row
    try:
        yield conn
        conn.commit()
    finally:
        conn.close()


def sqlite_obj_to_dict(sqlite_obj):
    """``{column: [value of each row]}`` of ``sqlite3.Row`` rows (``{}`` for none)."""
    if len(sqlite_obj) == 0:
        return {}
    # .keys() is needed: iterating a sqlite3.Row yields its values, not its column names.
    return {k: [row[k] for row in sqlite_obj] for k in sqlite_obj[0].keys()}  # noqa: SIM118


def _quote(identifier):
    return '"' + str(identifier).replace('"', '""') + '"'


def _as_number(value, save_lists=False):
    """A float/int for scalars and 1-element tensors; a JSON string for lists when asked; else None."""
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, (int, float)):
        return value
    if torch.is_tensor(value):
        if value.numel() == 1:
            return value.detach().item()
        return json.dumps(value.detach().cpu().tolist()) if save_lists else None
    if hasattr(value, "item") and getattr(value, "size", None) == 1:  # numpy scalars
        return value.item()
    if save_lists and isinstance(value, (list, tuple)):
        return json.dumps([_as_number(v, True) for v in value])
    return None


class RecordWriter:
    def __init__(
        self, folder, global_db_path=None, experiment_name=None, is_new_experiment=True, save_lists=False
    ):
        self.folder = folder
        self.global_db_path = global_db_path
        self.experiment_name = experiment_name
        self.is_new_experiment = is_new_experiment
        self.save_lists = save_lists
        self.records = defaultdict(list)
        os.makedirs(folder, exist_ok=True)
        self.db_path = os.path.join(folder, "logs.db")
        if global_db_path is not None and is_new_experiment and experiment_name is not None:
            self._delete_experiment_from_global_db()

    def append(self, group_name, values, x):
        row = {ITERATION: x}
        for k, v in values.items():
            number = _as_number(v, self.save_lists)
            if number is not None:
                row[str(k)] = number
        if len(row) == 1:
            return
        buffered = self.records[group_name]
        if buffered and buffered[-1][ITERATION] == x:
            # several updates of one group at the same x form one row (e.g. accuracies + best epoch)
            buffered[-1].update(row)
        else:
            buffered.append(row)

    def save_records(self):
        """Write everything buffered since the last call to SQLite and CSV."""
        if not self.records:
            return
        with _database(self.db_path) as conn:
            for group, rows in self.records.items():
                self._insert(conn, group, rows)
            conn.commit()
            for group in self.records:
                self._rewrite_csv(conn, group)
        if self.global_db_path is not None:
            with _database(self.global_db_path) as conn:
                for group, rows in self.records.items():
                    tagged = [{**row, "experiment_name": self.experiment_name} for row in rows]
                    self._insert(conn, group, tagged)
                conn.commit()
        self.records = defaultdict(list)

    def _insert(self, conn, group, rows):
        conn.execute(
            f"CREATE TABLE IF NOT EXISTS {_quote(group)} "
            f"(id INTEGER PRIMARY KEY AUTOINCREMENT, {_quote(ITERATION)})"
        )
        existing = {r[1] for r in conn.execute(f"PRAGMA table_info({_quote(group)})")}
        for row in rows:
            for column in row:
                if column not in existing:
                    conn.execute(f"ALTER TABLE {_quote(group)} ADD COLUMN {_quote(column)}")
                    existing.add(column)
            columns = ", ".join(_quote(c) for c in row)
            marks = ", ".join("?" for _ in row)
            conn.execute(f"INSERT INTO {_quote(group)} ({columns}) VALUES ({marks})", list(row.values()))

    def _rewrite_csv(self, conn, group):
        cursor = conn.execute(f"SELECT * FROM {_quote(group)} ORDER BY id")
        columns = [d[0] for d in cursor.description]
        keep = [i for i, c in enumerate(columns) if c != "id"]
        path = os.path.join(self.folder, f"{group}.csv")
        temp = path + ".tmp"
        with open(temp, "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow([columns[i] for i in keep])
            for row in cursor:
                writer.writerow([row[i] for i in keep])
        os.replace(temp, path)

    def _delete_experiment_from_global_db(self):
        if not os.path.exists(self.global_db_path):
            return
        with _database(self.global_db_path) as conn:
            tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")]
            for t in tables:
                cols = {r[1] for r in conn.execute(f"PRAGMA table_info({_quote(t)})")}
                if "experiment_name" in cols:
                    conn.execute(f"DELETE FROM {_quote(t)} WHERE experiment_name=?", (self.experiment_name,))
            conn.commit()


class RecordKeeper:
    def __init__(self, tensorboard_writer=None, record_writer=None, attributes_to_search_for=None):
        self.tensorboard_writer = tensorboard_writer
        self.record_writer = record_writer
        self.attributes_to_search_for = (
            c_f.list_of_recordable_attributes_list_names()
            if attributes_to_search_for is None
            else attributes_to_search_for
        )
        self.hash_map = {}
        if record_writer is not None:
            path = self._hash_map_path()
            if os.path.exists(path):
                with open(path) as f:
                    self.hash_map = json.load(f)

    # -- writing ---------------------------------------------------------------------------------

    def update_records(
        self, record, global_iteration, custom_attr_func=None, parent_name=None, recursive_types=None
    ):
        """Record a dict of numbers as group ``parent_name``, or a dict of objects, one group each."""
        if parent_name is not None:
            self._add(parent_name, record, global_iteration)
            return
        for key, obj in record.items():
            self._record_object(self._object_group_name(key, obj), obj, global_iteration,
                                custom_attr_func, tuple(recursive_types or ()), depth=0)

    def save_records(self):
        if self.record_writer is not None:
            self.record_writer.save_records()
        if self.tensorboard_writer is not None:
            self.tensorboard_writer.flush()

    def _object_group_name(self, key, obj):
        obj = _unwrap(obj)
        if isinstance(obj, (torch.nn.ModuleDict, torch.nn.ModuleList)):
            return str(key)
        return f"{key}_{type(obj).__name__}"

    def _record_object(self, group, obj, x, custom_attr_func, recursive_types, depth):
        obj = _unwrap(obj)
        values = {}
        for list_name in self.attributes_to_search_for:
            for attr in getattr(obj, list_name, []):
                if hasattr(obj, attr):
                    values[attr] = getattr(obj, attr)
        if custom_attr_func is not None:
            values.update(custom_attr_func(obj))
        if values:
            self._add(group, values, x)
        if not recursive_types or depth > 8:
            return
        for attr_name, attr_value in vars(obj).items():
            if isinstance(attr_value, dict) and dict in recursive_types:
                for k, child in attr_value.items():
                    if isinstance(child, recursive_types) and not isinstance(child, dict):
                        name = f"{group}_{attr_name}_{self._object_group_name(k, child)}"
                        self._record_object(name, child, x, custom_attr_func, recursive_types, depth + 1)

    def _add(self, group, values, x):
        group = self._maybe_hash(group)
        if self.record_writer is not None:
            self.record_writer.append(group, values, x)
        if self.tensorboard_writer is not None:
            for k, v in values.items():
                number = _as_number(v)
                if number is not None:
                    self.tensorboard_writer.add_scalar(f"{group}/{k}", number, x)

    def _hash_map_path(self):
        return os.path.join(self.record_writer.folder, "hash_map.json")

    def _maybe_hash(self, group):
        # SQLite and file systems cope badly with very long names; keep them readable otherwise.
        if len(group) <= MAX_GROUP_NAME:
            return group
        hashed = "group_" + hashlib.sha1(group.encode()).hexdigest()[:16]
        if hashed not in self.hash_map:
            self.hash_map[hashed] = group
            if self.record_writer is not None:
                with open(self._hash_map_path(), "w") as f:
                    json.dump(self.hash_map, f, indent=1)
        return hashed

    # -- reading ---------------------------------------------------------------------------------

    def table_exists(self, table_name):
        if self.record_writer is None or not os.path.exists(self.record_writer.db_path):
            return False
        with _database(self.record_writer.db_path) as conn:
            found = conn.execute(
                "SELECT name FROM sqlite_master WHERE type='table' AND name=?", (table_name,)
            ).fetchone()
        return found is not None

    def query(self, query, values=(), return_dict=False):
        with _database(self.record_writer.db_path, rows_as_dicts=True) as conn:
            rows = conn.execute(query, tuple(values)).fetchall()
        return sqlite_obj_to_dict(rows) if return_dict else rows


def _unwrap(obj):
    if isinstance(obj, (torch.nn.DataParallel, torch.nn.parallel.DistributedDataParallel)):
        return obj.module
    return obj
