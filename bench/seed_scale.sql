-- Bulk-seed :n messages (psql -v n=1000000 -v step=60) with their children, without the API, then
-- VACUUM ANALYZE as autovacuum would (visibility map for index-only counts, statistics).
-- Shapes scale with n, so that a filter matches as many rows at any size:
-- 20 organizations, n/20 ref_ids (20 messages each), n/1000 customers (1000 each),
-- one message every :step seconds of creation time ending now, ids ObjectId-like and
-- time-ordered.
-- For speed the load skips per-row foreign-key checks (the rows are made consistent) and builds
-- the secondary indexes once at the end rather than row by row.
\set ON_ERROR_STOP on
BEGIN;
SET LOCAL session_replication_role = replica;
SET LOCAL maintenance_work_mem = '1GB';
CREATE TEMP TABLE secondary_indexes ON COMMIT DROP AS
SELECT i.indexrelid::regclass::text AS name, pg_get_indexdef(i.indexrelid) AS ddl
FROM pg_index AS i
WHERE i.indrelid IN ('messages'::regclass, 'message_attachments'::regclass,
                     'message_key_values'::regclass)
  AND NOT EXISTS (SELECT FROM pg_constraint AS c WHERE c.conindid = i.indexrelid);
DO $$
DECLARE index record;
BEGIN
    FOR index IN SELECT name FROM secondary_indexes LOOP
        EXECUTE format('DROP INDEX %s', index.name);
    END LOOP;
END $$;
INSERT INTO messages (id, event_time, communication_id, msg_type, type, user_id,
    received_config_id, module_id, ref_id, ref_display_id, is_system_gen, imap_config_id,
    created_by, organization, creation_time, last_update_time, is_deleted, is_assignee_read,
    customer_id, customer_entity_id, is_description)
SELECT lpad(to_hex(extract(epoch FROM t)::bigint), 8, '0') || lpad(to_hex(i), 16, '0'),
       t, 'comm-' || (i % 100000), i % 5, CASE WHEN i % 3 = 0 THEN 'inbound' ELSE 'outbound' END,
       'user-' || (i % 500), 'rc-' || (i % 50), i % 12, 'ref-' || (i % greatest(:n / 20, 1)),
       'R-' || i, i % 10 = 0, 'imap-' || (i % 7), 'agent-' || (i % 300), 'org-' || (i % 20),
       t, t + interval '5 minutes', i % 50 = 0, i % 2 = 0,
       'cust-' || (i % greatest(:n / 1000, 1)), 'ent-' || (i % 2000), i % 25 = 0
FROM generate_series(1, :n) AS i,
     LATERAL (SELECT date_trunc('second', now()) - (:n - i) * :step * interval '1 second' AS t)
     AS times;

INSERT INTO message_attachments (message_id, ordinal, attachment_id)
SELECT id, k, 'att-' || substr(id, 17) || '-' || k
FROM messages, generate_series(0, 2) AS k;

INSERT INTO message_key_values (message_id, channel, ordinal, keys_text, values_text, queryparam)
SELECT id, 'read_map', k, 'user-' || k, 'read', k = 0
FROM messages, generate_series(0, 1) AS k
UNION ALL
SELECT id, channel, 0, 'to', 'value-' || substr(id, 17), false
FROM messages, unnest(ARRAY['email', 'sms', 'api', 'beep']) AS channel;

DO $$
DECLARE index record;
BEGIN
    FOR index IN SELECT ddl FROM secondary_indexes LOOP
        EXECUTE replace(index.ddl, ' ON ONLY ', ' ON ');  -- a partitioned index's DDL says ONLY
    END LOOP;
END $$;
COMMIT;
VACUUM ANALYZE messages;
VACUUM ANALYZE message_attachments;
VACUUM ANALYZE message_key_values;
