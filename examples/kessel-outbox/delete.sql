-- The service deletes a host: the row and a DeleteResource event together.
-- Run with: psql -v n=1 -f delete.sql
BEGIN;
DELETE FROM hosts WHERE id = 'h' || :n;
INSERT INTO outbox (id, aggregatetype, aggregateid, version, operation, payload)
VALUES (gen_random_uuid(), 'host', 'h' || :n, 'v1beta2', 'DeleteResource', jsonb_build_object(
    'reference', jsonb_build_object(
        'resource_type', 'host',
        'resource_id', 'h' || :n,
        'reporter', jsonb_build_object('type', 'hbi'))));
COMMIT;
