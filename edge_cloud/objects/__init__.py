"""The shared object layer: what every daemon needs to know about Controller API objects.

Controller, notify, CRM and DME all handle the same `edgeproto` objects and must agree with
each other, and with the original, on how an object is named and stored:

- `registry`: every stored or replicated type, its identity and notify flags;
- `keys`: key strings byte-identical to the original's Go JSON, etcd keys, key validation
  and the standard "key ... not found" errors;
- `fields`: the `fields` update mask of numeric paths (apply, diff, validate);
- `match`: Show filtering by partial objects;
- `codec`: etcd value encoding and dict conversion;
- `durations`: Go `time.Duration` text; `gojson`: the Go spellings behind all of it.

Importing this package imports the generated `edgeproto` modules.
"""
