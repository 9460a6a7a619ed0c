-- A small SDMX structure registry in Postgres: agency schemes, codelists,
-- concept schemes, data structure definitions (DSDs) and dataflows, each
-- maintainable identified by (agency, id, version), names per language as
-- a JSON object ({"en": "...", "fr": "..."}).
--
-- Publication: every change to a structure or to one of its items marks
-- the structure as touched; at commit, a deferred trigger emits, for each
-- touched structure and in the order first touched, ONE transactional
-- logical message (prefix 'sdmx') holding the whole structure as it stands
-- at that commit — or a deletion when it is gone. ferry's Postgres source
-- (mode "messages") streams those messages in commit order; the SDMX plugin
-- (plugins/sdmx) turns each into a full SDMX structure message keyed by URN.
-- Because the document is built inside the changing transaction, it is
-- exactly consistent with it, and a change to one code re-publishes the
-- whole codelist (replace semantics).
--
-- sdmx_publish_all() emits every structure (the full-content publication of
-- a first start) in one transaction, through the same stream: nothing
-- before it is missed, nothing after it is reordered. sdmx_republish() (for
-- `ferry resync`) does the same in chunks of committed transactions.

CREATE TABLE IF NOT EXISTS agency_schemes (
    agency       text    NOT NULL,
    id           text    NOT NULL DEFAULT 'AGENCIES',
    version      text    NOT NULL DEFAULT '1.0',
    names        jsonb   NOT NULL,
    is_final     boolean NOT NULL DEFAULT false,
    access_group text    NOT NULL DEFAULT 'public',
    PRIMARY KEY (agency, id, version)
);

CREATE TABLE IF NOT EXISTS agencies (
    scheme_agency  text  NOT NULL,
    scheme_id      text  NOT NULL,
    scheme_version text  NOT NULL,
    id             text  NOT NULL,
    names          jsonb NOT NULL,
    position       int   NOT NULL DEFAULT 0,
    PRIMARY KEY (scheme_agency, scheme_id, scheme_version, id),
    FOREIGN KEY (scheme_agency, scheme_id, scheme_version)
        REFERENCES agency_schemes ON DELETE CASCADE ON UPDATE CASCADE
);

CREATE TABLE IF NOT EXISTS codelists (
    agency       text    NOT NULL,
    id           text    NOT NULL,
    version      text    NOT NULL DEFAULT '1.0',
    names        jsonb   NOT NULL,
    is_final     boolean NOT NULL DEFAULT false,
    access_group text    NOT NULL DEFAULT 'public',
    PRIMARY KEY (agency, id, version)
);

CREATE TABLE IF NOT EXISTS codes (
    codelist_agency  text  NOT NULL,
    codelist_id      text  NOT NULL,
    codelist_version text  NOT NULL,
    id               text  NOT NULL,
    names            jsonb NOT NULL,
    position         int   NOT NULL DEFAULT 0,
    PRIMARY KEY (codelist_agency, codelist_id, codelist_version, id),
    FOREIGN KEY (codelist_agency, codelist_id, codelist_version)
        REFERENCES codelists ON DELETE CASCADE ON UPDATE CASCADE
);

CREATE TABLE IF NOT EXISTS concept_schemes (
    agency       text    NOT NULL,
    id           text    NOT NULL,
    version      text    NOT NULL DEFAULT '1.0',
    names        jsonb   NOT NULL,
    is_final     boolean NOT NULL DEFAULT false,
    access_group text    NOT NULL DEFAULT 'public',
    PRIMARY KEY (agency, id, version)
);

CREATE TABLE IF NOT EXISTS concepts (
    scheme_agency  text  NOT NULL,
    scheme_id      text  NOT NULL,
    scheme_version text  NOT NULL,
    id             text  NOT NULL,
    names          jsonb NOT NULL,
    position       int   NOT NULL DEFAULT 0,
    PRIMARY KEY (scheme_agency, scheme_id, scheme_version, id),
    FOREIGN KEY (scheme_agency, scheme_id, scheme_version)
        REFERENCES concept_schemes ON DELETE CASCADE ON UPDATE CASCADE
);

CREATE TABLE IF NOT EXISTS data_structures (
    agency       text    NOT NULL,
    id           text    NOT NULL,
    version      text    NOT NULL DEFAULT '1.0',
    names        jsonb   NOT NULL,
    is_final     boolean NOT NULL DEFAULT false,
    access_group text    NOT NULL DEFAULT 'public',
    PRIMARY KEY (agency, id, version)
);

-- Dimensions, the time dimension, attributes and the primary measure of a
-- DSD. Each refers to a concept and, optionally, a codelist (its values).
CREATE TABLE IF NOT EXISTS dsd_components (
    dsd_agency       text NOT NULL,
    dsd_id           text NOT NULL,
    dsd_version      text NOT NULL,
    id               text NOT NULL,
    kind             text NOT NULL CHECK (kind IN ('dimension', 'time_dimension', 'attribute', 'measure')),
    position         int  NOT NULL DEFAULT 0,
    concept_agency   text NOT NULL,
    concept_scheme   text NOT NULL,
    concept_version  text NOT NULL,
    concept_id       text NOT NULL,
    codelist_agency  text,
    codelist_id      text,
    codelist_version text,
    status           text NOT NULL DEFAULT 'Conditional' CHECK (status IN ('Mandatory', 'Conditional')),
    attachment       text NOT NULL DEFAULT 'dataset' CHECK (attachment IN ('dataset', 'observation')),
    PRIMARY KEY (dsd_agency, dsd_id, dsd_version, id),
    FOREIGN KEY (dsd_agency, dsd_id, dsd_version)
        REFERENCES data_structures ON DELETE CASCADE ON UPDATE CASCADE,
    FOREIGN KEY (concept_agency, concept_scheme, concept_version, concept_id)
        REFERENCES concepts ON UPDATE CASCADE,
    FOREIGN KEY (codelist_agency, codelist_id, codelist_version)
        REFERENCES codelists ON UPDATE CASCADE
);

CREATE TABLE IF NOT EXISTS dataflows (
    agency       text    NOT NULL,
    id           text    NOT NULL,
    version      text    NOT NULL DEFAULT '1.0',
    names        jsonb   NOT NULL,
    is_final     boolean NOT NULL DEFAULT false,
    access_group text    NOT NULL DEFAULT 'public',
    dsd_agency   text    NOT NULL,
    dsd_id       text    NOT NULL,
    dsd_version  text    NOT NULL,
    PRIMARY KEY (agency, id, version),
    FOREIGN KEY (dsd_agency, dsd_id, dsd_version) REFERENCES data_structures ON UPDATE CASCADE
);

-- Structures touched by the running transaction, in the order first touched.
CREATE TABLE IF NOT EXISTS sdmx_touched (
    xid     xid8   NOT NULL DEFAULT pg_current_xact_id(),
    seq     bigserial,
    class   text   NOT NULL,
    agency  text   NOT NULL,
    id      text   NOT NULL,
    version text   NOT NULL,
    -- The access group of the structure's head row as it was touched, so
    -- a deletion goes to the topic its structure was published to.
    access_group text,
    PRIMARY KEY (xid, class, agency, id, version)
);

-- The whole structure as a document for plugins/sdmx, or NULL if it is gone.
CREATE OR REPLACE FUNCTION sdmx_document(p_class text, p_agency text, p_id text, p_version text)
RETURNS jsonb LANGUAGE plpgsql STABLE AS $$
DECLARE
    head record;
    document jsonb;
    found_rows bigint;
BEGIN
    IF p_class IN ('AgencyScheme', 'Codelist', 'ConceptScheme') THEN
        EXECUTE format('SELECT names, is_final, access_group FROM %I WHERE agency = $1 AND id = $2 AND version = $3',
                       CASE p_class WHEN 'AgencyScheme' THEN 'agency_schemes'
                                    WHEN 'Codelist' THEN 'codelists'
                                    ELSE 'concept_schemes' END)
            INTO head USING p_agency, p_id, p_version;
        GET DIAGNOSTICS found_rows = ROW_COUNT;  -- EXECUTE leaves FOUND alone
        IF found_rows = 0 THEN
            RETURN NULL;
        END IF;
        document := jsonb_build_object('items', CASE p_class
            WHEN 'AgencyScheme' THEN (SELECT coalesce(jsonb_agg(jsonb_build_object('id', id, 'names', names) ORDER BY position, id), '[]')
                                      FROM agencies WHERE (scheme_agency, scheme_id, scheme_version) = (p_agency, p_id, p_version))
            WHEN 'Codelist' THEN (SELECT coalesce(jsonb_agg(jsonb_build_object('id', id, 'names', names) ORDER BY position, id), '[]')
                                  FROM codes WHERE (codelist_agency, codelist_id, codelist_version) = (p_agency, p_id, p_version))
            ELSE (SELECT coalesce(jsonb_agg(jsonb_build_object('id', id, 'names', names) ORDER BY position, id), '[]')
                  FROM concepts WHERE (scheme_agency, scheme_id, scheme_version) = (p_agency, p_id, p_version))
        END);
    ELSIF p_class = 'DataStructure' THEN
        SELECT names, is_final, access_group INTO head FROM data_structures
            WHERE agency = p_agency AND id = p_id AND version = p_version;
        IF NOT FOUND THEN
            RETURN NULL;
        END IF;
        SELECT jsonb_build_object(
            'dimensions', coalesce(jsonb_agg(component) FILTER (WHERE kind = 'dimension'), '[]'),
            'time_dimension', (jsonb_agg(component) FILTER (WHERE kind = 'time_dimension')) -> 0,
            'attributes', coalesce(jsonb_agg(component) FILTER (WHERE kind = 'attribute'), '[]'),
            'measure', (jsonb_agg(component) FILTER (WHERE kind = 'measure')) -> 0)
        INTO document
        FROM (
            SELECT kind, jsonb_strip_nulls(jsonb_build_object(
                'id', id,
                'position', CASE WHEN kind IN ('dimension', 'time_dimension') THEN position END,
                'status', CASE WHEN kind = 'attribute' THEN status END,
                'attachment', CASE WHEN kind = 'attribute' THEN attachment END,
                'concept', jsonb_build_object('agency', concept_agency, 'id', concept_scheme,
                                              'version', concept_version, 'item', concept_id),
                'codelist', CASE WHEN codelist_id IS NOT NULL AND kind IN ('dimension', 'attribute') THEN
                    jsonb_build_object('agency', codelist_agency, 'id', codelist_id, 'version', codelist_version) END
            )) AS component
            FROM dsd_components
            WHERE (dsd_agency, dsd_id, dsd_version) = (p_agency, p_id, p_version)
            ORDER BY position, id
        ) components;
    ELSIF p_class = 'Dataflow' THEN
        SELECT names, is_final, access_group, dsd_agency, dsd_id, dsd_version INTO head FROM dataflows
            WHERE agency = p_agency AND id = p_id AND version = p_version;
        IF NOT FOUND THEN
            RETURN NULL;
        END IF;
        document := jsonb_build_object('structure',
            jsonb_build_object('agency', head.dsd_agency, 'id', head.dsd_id, 'version', head.dsd_version));
    ELSE
        RAISE EXCEPTION 'unknown SDMX class %', p_class;
    END IF;
    RETURN document || jsonb_build_object(
        'action', 'upsert', 'class', p_class, 'agency', p_agency, 'id', p_id, 'version', p_version,
        'final', head.is_final, 'names', head.names, 'access_group', head.access_group);
END $$;

-- Emits the structure's document (or its deletion) as a transactional
-- logical message with the prefix 'sdmx'. The structure's advisory lock,
-- held to the end of the transaction, orders publications of one structure
-- by commit: a transaction that publishes it (an edit at its commit, a
-- resync chunk) reads it only once every other that published it has
-- committed, so the stream never carries an older document after a newer.
CREATE OR REPLACE FUNCTION sdmx_publish(p_class text, p_agency text, p_id text, p_version text,
                                        p_access_group text DEFAULT NULL)
RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    document jsonb;
BEGIN
    PERFORM pg_advisory_xact_lock(hashtext(concat_ws(':', 'sdmx', p_class, p_agency, p_id, p_version)));
    document := sdmx_document(p_class, p_agency, p_id, p_version);
    IF document IS NULL THEN
        document := jsonb_strip_nulls(jsonb_build_object('action', 'delete', 'class', p_class,
                                       'agency', p_agency, 'id', p_id, 'version', p_version,
                                       'access_group', p_access_group));
    END IF;
    PERFORM pg_logical_emit_message(true, 'sdmx', document::text);
END $$;

-- Every current structure, dependencies first.
CREATE OR REPLACE FUNCTION sdmx_structures()
RETURNS TABLE (class text, agency text, id text, version text) LANGUAGE sql STABLE AS $$
    SELECT class, agency, id, version FROM (
        SELECT 1 AS rank, 'AgencyScheme' AS class, agency, id, version FROM agency_schemes
        UNION ALL SELECT 2, 'Codelist', agency, id, version FROM codelists
        UNION ALL SELECT 3, 'ConceptScheme', agency, id, version FROM concept_schemes
        UNION ALL SELECT 4, 'DataStructure', agency, id, version FROM data_structures
        UNION ALL SELECT 5, 'Dataflow', agency, id, version FROM dataflows
    ) structures
    ORDER BY rank, agency, id, version
$$;

-- The full-content publication: every current structure, in one
-- transaction; returns how many.
CREATE OR REPLACE FUNCTION sdmx_publish_all() RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE
    structure record;
    published bigint := 0;
BEGIN
    FOR structure IN SELECT * FROM sdmx_structures() LOOP
        PERFORM sdmx_publish(structure.class, structure.agency, structure.id, structure.version);
        published := published + 1;
    END LOOP;
    RETURN published;
END $$;

-- `ferry resync` (source.resync = "CALL sdmx_republish()"): the same
-- publication, committed every p_chunk structures, so that a host that
-- crashes while delivering it repeats only what was not acknowledged.
CREATE OR REPLACE PROCEDURE sdmx_republish(p_chunk int DEFAULT 100)
LANGUAGE plpgsql AS $$
DECLARE
    structure record;
    published bigint := 0;
BEGIN
    FOR structure IN SELECT * FROM sdmx_structures() LOOP
        PERFORM sdmx_publish(structure.class, structure.agency, structure.id, structure.version);
        published := published + 1;
        IF published % p_chunk = 0 THEN
            COMMIT;
        END IF;
    END LOOP;
END $$;

-- Row trigger: marks the owning structure(s) of the changed row as touched.
-- Arguments: the class, then the columns holding agency, id and version.
CREATE OR REPLACE FUNCTION sdmx_touch() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    image jsonb;
BEGIN
    FOREACH image IN ARRAY CASE TG_OP
        WHEN 'INSERT' THEN ARRAY[to_jsonb(NEW)]
        WHEN 'DELETE' THEN ARRAY[to_jsonb(OLD)]
        ELSE ARRAY[to_jsonb(OLD), to_jsonb(NEW)]
    END LOOP
        INSERT INTO sdmx_touched (class, agency, id, version, access_group)
        VALUES (TG_ARGV[0], image ->> TG_ARGV[1], image ->> TG_ARGV[2], image ->> TG_ARGV[3],
                image ->> 'access_group')
        ON CONFLICT (xid, class, agency, id, version) DO UPDATE
            SET access_group = coalesce(sdmx_touched.access_group, EXCLUDED.access_group);
    END LOOP;
    RETURN NULL;
END $$;

-- At commit, once per touched structure, in the order first touched.
CREATE OR REPLACE FUNCTION sdmx_publish_touched() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM sdmx_publish(NEW.class, NEW.agency, NEW.id, NEW.version,
        (SELECT access_group FROM sdmx_touched
          WHERE xid = NEW.xid AND class = NEW.class AND agency = NEW.agency
            AND id = NEW.id AND version = NEW.version));
    DELETE FROM sdmx_touched
        WHERE xid = NEW.xid AND class = NEW.class AND agency = NEW.agency
          AND id = NEW.id AND version = NEW.version;
    RETURN NULL;
END $$;

DO $$
DECLARE
    t record;
BEGIN
    FOR t IN SELECT * FROM (VALUES
        ('agency_schemes',  'AgencyScheme',  'agency',          'id',          'version'),
        ('agencies',        'AgencyScheme',  'scheme_agency',   'scheme_id',   'scheme_version'),
        ('codelists',       'Codelist',      'agency',          'id',          'version'),
        ('codes',           'Codelist',      'codelist_agency', 'codelist_id', 'codelist_version'),
        ('concept_schemes', 'ConceptScheme', 'agency',          'id',          'version'),
        ('concepts',        'ConceptScheme', 'scheme_agency',   'scheme_id',   'scheme_version'),
        ('data_structures', 'DataStructure', 'agency',          'id',          'version'),
        ('dsd_components',  'DataStructure', 'dsd_agency',      'dsd_id',      'dsd_version'),
        ('dataflows',       'Dataflow',      'agency',          'id',          'version')
    ) AS v(tab, class, agency, id, version)
    LOOP
        EXECUTE format('DROP TRIGGER IF EXISTS sdmx_touch ON %I', t.tab);
        EXECUTE format('CREATE TRIGGER sdmx_touch AFTER INSERT OR UPDATE OR DELETE ON %I
                        FOR EACH ROW EXECUTE FUNCTION sdmx_touch(%L, %L, %L, %L)',
                       t.tab, t.class, t.agency, t.id, t.version);
    END LOOP;
END $$;

DROP TRIGGER IF EXISTS sdmx_publish ON sdmx_touched;
CREATE CONSTRAINT TRIGGER sdmx_publish AFTER INSERT ON sdmx_touched
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION sdmx_publish_touched();
