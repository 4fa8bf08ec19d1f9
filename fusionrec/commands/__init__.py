"""The CLI's commands, one module per domain: stream (demo, replay, worker, recommend), model
(export-encoder, encode-items, train, evaluate), serve (serve, search-eval, tag-items) and
services (local Kafka/Cassandra, schema). `fusionrec.cli` registers them and turns errors into
one `error:` line."""
