"""moto_server for crmsync's reliability suite.

Plain moto_server has two properties that make it unfit to judge exactly-once behaviour under
load, both fixed here without changing any API answer:

1. Isolation. moto serves each request on its own thread and evaluates a TransactWriteItems item by
   item with no lock, so two concurrent transactions whose conditions exclude each other can both
   commit, and a GetItem can see half a transaction. DynamoDB serializes conflicting transactions
   and never shows a partial one. Here every DynamoDB request runs under one lock.

2. Cost. Before each TransactWriteItems moto deep-copies every table it touches, to roll back on a
   canceled transaction, and every Query (of the table or of an index) sorts and scans the whole
   table: costs that grow with the table, so a long run slows down quadratically. Here the copy is
   replaced by an undo log of the items the transaction names (at most 100), a Query looks only at
   the items of its partition, found through a hash map kept up to date on every write, and a Scan
   sorts the table once per version rather than once per page.

3. Long polls. A FIFO ReceiveMessage that finds only messages of groups already in flight waits
   for "visible messages", which are there, so it spins on the CPU until its wait time ends and
   starves every other request. Here it sleeps until a message arrives or 100 ms pass.

4. Per-request overhead. Every request lists moto's package directory (to tell service names from
   hosts) under the dispatcher's global lock and logs a line; every visibility check of a message
   builds datetimes; deleting a message scans the queue twice and rebuilds it. Here the directory
   listing is read once, request logging is off, visibility is compared with the clock directly,
   and a delete stops at its message.

5. Idempotency tokens. The one answer changed, to DynamoDB's: a TransactWriteItems repeating a
   ClientRequestToken seen in the last 10 minutes (with the same items) succeeds without writing
   again, where moto ignores the token and the repeat fails its own conditions.

6. Index lag (only when CRMSYNC_INDEX_LAG_MS is set above 0). DynamoDB updates a global secondary
   index asynchronously, so a Query of an index may miss recent writes or return an item as it was
   before them; moto's indexes are read-your-writes. Here a Query of an index sees every item as
   it was CRMSYNC_INDEX_LAG_MS ago: each write records the item's previous image, and the Query
   uses the image from before the first write inside the lag. An answer that differs from a fresh
   one carries the header x-crmsync-lagged (the number of items it saw late) for the suite to
   count. Queries of the table itself, GetItem and the rest are unchanged (strongly consistent
   reads, as the worker makes them).

Usage: python3 motoserver.py -H 127.0.0.1 -p 4566 (the same arguments as moto_server).
"""

import copy
import logging
import os
import sys
import threading
import time

import moto

# The patches below reach into moto's internals: they are written against this release (the same
# pin as tools/moto.Version and the Makefile's MOTO_VERSION). Refuse another one rather than
# misbehave quietly.
MOTO_VERSION = "5.2.1"
if moto.__version__ != MOTO_VERSION:
    sys.exit(
        f"crmsync's patched moto_server is written against moto {MOTO_VERSION}, found {moto.__version__}: "
        f"run pip install 'moto[server]=={MOTO_VERSION}'"
    )

import moto.dynamodb.models as ddb_models
from moto.dynamodb.models import DynamoDBBackend
from moto.dynamodb.models.dynamo_type import DynamoType
from moto.dynamodb.models.table import Table
from moto.core.responses import ActionResult
from moto.dynamodb.responses import DynamoHandler
from moto.server import main
from moto.sqs.exceptions import ReceiptHandleIsInvalid
from moto.sqs.models import Message, Queue
import moto.backends as moto_backends

_lock = threading.RLock()
_call_action = DynamoHandler.call_action

# 6. Index lag: the time of the request being served (every write of one request, a transaction
# and its rollback included, shares it), and the lagged items the current request's answer saw.
_LAG = float(os.environ.get("CRMSYNC_INDEX_LAG_MS", "0") or 0) / 1000.0
_request = {"now": 0.0, "lagged": 0}


def _serialized_call_action(self):
    with _lock:
        _request["now"], _request["lagged"] = time.time(), 0
        status, headers, body = _call_action(self)
        if _request["lagged"]:
            headers["x-crmsync-lagged"] = str(_request["lagged"])
        return status, headers, body


DynamoHandler.call_action = _serialized_call_action


class _NoTableCopy:
    """Stands in for the copy module inside transact_write_items: the table 'backup' is the table
    itself (so moto's own rollback is a no-op) and _transact_write_items restores the touched
    items instead."""

    @staticmethod
    def deepcopy(x, memo=None):
        return x


_transact_write_items = DynamoDBBackend.transact_write_items
_missing = object()


def _key_of(table, op_type, op):
    if op_type == "Put":
        attrs = op["Item"]
        hv = DynamoType(attrs[table.hash_key_attr])
        rv = DynamoType(attrs[table.range_key_attr]) if table.range_key_attr else None
    else:
        key = op["Key"]
        hv = DynamoType(key[table.hash_key_attr])
        rv = DynamoType(key[table.range_key_attr]) if table.range_key_attr else None
    return hv, rv


def _restore(table, hv, rv, old):
    if rv is not None:
        bucket = table.items[hv]
        if old is _missing:
            bucket.pop(rv, None)
            if not bucket:
                table.items.pop(hv, None)
        else:
            bucket[rv] = old
    elif old is _missing:
        table.items.pop(hv, None)
    else:
        table.items[hv] = old


def _undoable_transact_write_items(self, transact_items):
    with _lock:
        saved = []
        for entry in transact_items:
            try:
                op_type, op = next(iter(entry.items()))
                table = self.tables.get(op.get("TableName"))
                if table is None:
                    continue
                hv, rv = _key_of(table, op_type, op)
                current = table.get_item(hv, rv)
            except Exception:  # malformed: moto itself will refuse the request
                continue
            saved.append((table, hv, rv, _missing if current is None else copy.deepcopy(current)))
        real_copy = ddb_models.copy
        ddb_models.copy = _NoTableCopy
        try:
            return _transact_write_items(self, transact_items)
        except BaseException:
            for table, hv, rv, old in reversed(saved):
                _restore(table, hv, rv, old)
            raise
        finally:
            ddb_models.copy = real_copy


DynamoDBBackend.transact_write_items = _undoable_transact_write_items


# 5. Idempotent transactions. DynamoDB treats a TransactWriteItems whose ClientRequestToken it saw
# in the last 10 minutes as the same request: it answers success without writing again (the AWS
# SDKs set the token once per call, so a retry after a commit whose answer was lost is harmless).
# moto ignores the token, so such a retry fails its own conditions; here it is answered as
# DynamoDB answers it. A token reused with other items is passed on (DynamoDB would answer
# IdempotentParameterMismatchException).
_TOKEN_TTL = 600.0
_tokens = {}  # ClientRequestToken -> (the request's items, when it committed)
_transact_handler = DynamoHandler.transact_write_items


def _idempotent_transact_write_items(self):
    token = self.body.get("ClientRequestToken")
    if not token:
        return _transact_handler(self)
    items = self.body.get("TransactItems")
    with _lock:
        now = time.monotonic()
        seen = _tokens.get(token)
        if seen is not None and now - seen[1] < _TOKEN_TTL and seen[0] == items:
            return ActionResult({"ConsumedCapacity": [], "ItemCollectionMetrics": {}})
        result = _transact_handler(self)
        if len(_tokens) > 100000:
            for old in [k for k, v in _tokens.items() if now - v[1] >= _TOKEN_TTL]:
                del _tokens[old]
        _tokens[token] = (items, now)
        return result


DynamoHandler.transact_write_items = _idempotent_transact_write_items


# Partition maps: per table, attribute name -> value -> keys of the items holding it, built on the
# first Query of an index keyed by that attribute and kept current by reindexing every written key.
def _partitions(table):
    p = table.__dict__.get("_crmsync_partitions")
    if p is None:
        p = table.__dict__["_crmsync_partitions"] = {"attrs": {}, "rev": {}}
    return p


def _reindex(table, hv, rv):
    table.__dict__["_crmsync_version"] = table.__dict__.get("_crmsync_version", 0) + 1
    p = _partitions(table)
    if not p["attrs"]:
        return
    key = (hv, rv)
    for attr, value in p["rev"].pop(key, {}).items():
        keys = p["attrs"][attr].get(value)
        if keys is not None:
            keys.discard(key)
    try:
        item = table.get_item(hv, rv)
    except Exception:
        item = None
    if item is None:
        return
    held = {}
    for attr, values in p["attrs"].items():
        v = item.attrs.get(attr)
        if v is not None:
            values.setdefault(v, set()).add(key)
            held[attr] = v
    if held:
        p["rev"][key] = held


def _index_attr(table, attr):
    p = _partitions(table)
    if attr in p["attrs"]:
        return p["attrs"][attr]
    values = p["attrs"][attr] = {}
    for item in list(table.all_items()):
        v = item.attrs.get(attr)
        if v is not None:
            key = (item.hash_key, item.range_key)
            values.setdefault(v, set()).add(key)
            p["rev"].setdefault(key, {})[attr] = v
    return values


_put_item = Table.put_item
_delete_item = Table.delete_item
_update_item = DynamoDBBackend.update_item


def _history(table):
    h = table.__dict__.get("_crmsync_history")
    if h is None:
        h = table.__dict__["_crmsync_history"] = {}
    return h


def _remember(table, hv, rv):
    """Records the item's image before a write (None when absent), at the request's time."""
    if not _LAG:
        return
    try:
        before = table.get_item(hv, rv)
    except Exception:
        before = None
    _history(table).setdefault((hv, rv), []).append((_request["now"], None if before is None else copy.deepcopy(before)))


def _lagged_images(table, horizon):
    """The items written after horizon, each as it was at horizon (None: absent then); older
    history is dropped."""
    h = _history(table)
    out = {}
    for key in list(h):
        entries = [e for e in h[key] if e[0] > horizon]
        if not entries:
            del h[key]
            continue
        h[key] = entries
        out[key] = entries[0][1]
    return out


def _indexed_put_item(self, item_attrs, *args, **kwargs):
    if _LAG:
        try:
            _remember(self, DynamoType(item_attrs[self.hash_key_attr]),
                      DynamoType(item_attrs[self.range_key_attr]) if self.range_key_attr else None)
        except Exception:
            pass
    item = _put_item(self, item_attrs, *args, **kwargs)
    _reindex(self, item.hash_key, item.range_key)
    return item


def _indexed_delete_item(self, hash_key, range_key, *args, **kwargs):
    _remember(self, hash_key, range_key)
    item = _delete_item(self, hash_key, range_key, *args, **kwargs)
    _reindex(self, hash_key, range_key)
    return item


def _indexed_update_item(self, table_name, key, *args, **kwargs):
    if _LAG:
        table = self.tables.get(table_name)
        if table is not None:
            try:
                _remember(table, DynamoType(key[table.hash_key_attr]),
                          DynamoType(key[table.range_key_attr]) if table.range_key_attr else None)
            except Exception:
                pass
    try:
        return _update_item(self, table_name, key, *args, **kwargs)
    finally:
        table = self.tables.get(table_name)
        if table is not None:
            try:
                hv = DynamoType(key[table.hash_key_attr])
                rv = DynamoType(key[table.range_key_attr]) if table.range_key_attr else None
                _reindex(table, hv, rv)
            except Exception:
                pass


Table.put_item = _indexed_put_item
Table.delete_item = _indexed_delete_item
DynamoDBBackend.update_item = _indexed_update_item

_restore_item = _restore


def _restore_and_reindex(table, hv, rv, old):
    _remember(table, hv, rv)
    _restore_item(table, hv, rv, old)
    _reindex(table, hv, rv)


_restore = _restore_and_reindex

_query = Table.query


def _partition_query(self, hash_key, *args, **kwargs):
    index_name = kwargs.get("index_name", args[6] if len(args) > 6 else None)
    conditions = kwargs.get("hash_key_conditions") or []
    candidates = None
    if index_name and conditions:
        attr, value = conditions[0]
        keys = _index_attr(self, attr).get(value, ())
        candidates = [it for it in (self.get_item(hv, rv) for hv, rv in keys) if it is not None]
        if _LAG:
            late = _lagged_images(self, _request["now"] - _LAG)
            seen = {(it.hash_key, it.range_key) for it in candidates} & late.keys()
            candidates = [it for it in candidates if (it.hash_key, it.range_key) not in late]
            for key, image in late.items():
                held = None if image is None else image.attrs.get(attr)
                if held is not None and held == value:  # DynamoType cannot compare with None
                    candidates.append(image)  # as it was before the writes inside the lag
                    seen.add(key)
            _request["lagged"] += len(seen)
    elif not index_name and hash_key is not None:
        bucket = self.items.get(hash_key)
        if bucket is None:
            candidates = []
        elif self.range_key_attr:
            candidates = list(bucket.values())
        else:
            candidates = [bucket]
    if candidates is None:
        return _query(self, hash_key, *args, **kwargs)
    candidates.sort(key=lambda x: (x.hash_key, x.range_key) if x.range_key else x.hash_key)
    self.all_items = lambda: candidates
    try:
        return _query(self, hash_key, *args, **kwargs)
    finally:
        del self.all_items


Table.query = _partition_query

# A Scan re-sorts the whole table for every page; between writes the order cannot change.
_all_items = Table.all_items


def _cached_all_items(self):
    version = self.__dict__.get("_crmsync_version", 0)
    cached = self.__dict__.get("_crmsync_all_items")
    if cached is None or cached[0] != version:
        cached = (version, _all_items(self))
        self.__dict__["_crmsync_all_items"] = cached
    return list(cached[1])


Table.all_items = _cached_all_items



def _wait_for_messages(self, timeout):
    with self._messages_lock:
        self._messages_lock.wait(timeout=min(timeout, 0.1))


Queue.wait_for_messages = _wait_for_messages

# Deleting a message scans the queue twice and rebuilds it (moto): with thousands of messages
# waiting, every DeleteMessageBatch entry costs milliseconds. One scan that stops at the message
# (consumers delete roughly oldest first, so it is near the front) gives the same answers.
def _delete_message(self, receipt_handle):
    if receipt_handle in self.deleted_messages:
        return  # already deleted: moto and SQS accept it again
    for index, message in enumerate(self._messages):
        if message.had_receipt_handle(receipt_handle):
            self.pending_messages.discard(message)
            self.deleted_messages.update(message.all_receipt_handles)
            del self._messages[index]
            return
    raise ReceiptHandleIsInvalid()


Queue.delete_message = _delete_message

Message.visible = property(lambda self: time.time() * 1000 > self.visible_at)
Message.delayed = property(lambda self: time.time() * 1000 < self.delayed_until)

_modules = tuple(moto_backends.list_of_moto_modules())
moto_backends.list_of_moto_modules = lambda: _modules
logging.getLogger("werkzeug").setLevel(logging.ERROR)

if __name__ == "__main__":
    main(sys.argv[1:])
