-- What the service does: each business write and its outbox event in one
-- transaction. Run with: psql -v n=1 -f write.sql (n numbers the rows).

-- A customer, reported.
BEGIN;
INSERT INTO customers (id, name) VALUES ('c' || :n, 'Customer ' || :n)
    ON CONFLICT (id) DO UPDATE SET name = excluded.name;
INSERT INTO outbox (id, aggregatetype, aggregateid, version, operation, payload)
VALUES (gen_random_uuid(), 'customer', 'c' || :n, 'v1beta2', 'ReportResource', jsonb_build_object(
    'type', 'customer',
    'reporter_type', 'my-reporter',
    'reporter_instance_id', 'redhat',
    'representations', jsonb_build_object(
        'metadata', jsonb_build_object(
            'local_resource_id', 'c' || :n,
            'api_href', 'https://app.example.com/api/customers/c' || :n,
            'reporter_version', '1.0'),
        'common', jsonb_build_object('workspace_id', 'ws-1'),
        'reporter', jsonb_build_object('name', 'Customer ' || :n))));
COMMIT;

-- A host, reported, with the outbox row pruned in the same transaction
-- (the guide's "Pruning the Outbox": the row never stays in the table, and
-- ferry still delivers it, because it reads the write-ahead log).
BEGIN;
INSERT INTO hosts (id, hostname, workspace_id) VALUES ('h' || :n, 'host-' || :n || '.example.com', 'ws-1')
    ON CONFLICT (id) DO UPDATE SET hostname = excluded.hostname;
SELECT gen_random_uuid() AS event_id \gset
INSERT INTO outbox (id, aggregatetype, aggregateid, version, operation, payload)
VALUES (:'event_id', 'host', 'h' || :n, 'v1beta2', 'ReportResource', jsonb_build_object(
    'type', 'host',
    'reporter_type', 'hbi',
    'reporter_instance_id', 'redhat',
    'representations', jsonb_build_object(
        'metadata', jsonb_build_object(
            'local_resource_id', 'h' || :n,
            'api_href', 'https://app.example.com/api/hosts/h' || :n,
            'reporter_version', '1.0'),
        'common', jsonb_build_object('workspace_id', 'ws-1'),
        'reporter', jsonb_build_object('hostname', 'host-' || :n || '.example.com'))));
DELETE FROM outbox WHERE id = :'event_id';
COMMIT;
