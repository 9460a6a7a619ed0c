-- The service's tables and its outbox, as in the Kessel guide ("Report
-- resources", The Outbox Table): the outbox follows Debezium's Outbox Event
-- Router layout; `operation` names the Kessel API method, `payload` is the
-- request body.
CREATE TABLE IF NOT EXISTS customers (
    id   text PRIMARY KEY,
    name text NOT NULL
);

CREATE TABLE IF NOT EXISTS hosts (
    id           text PRIMARY KEY,
    hostname     text NOT NULL,
    workspace_id text NOT NULL
);

CREATE TABLE IF NOT EXISTS outbox (
    id            uuid         NOT NULL,
    aggregatetype varchar(255) NOT NULL,
    aggregateid   varchar(255) NOT NULL,
    version       varchar(255) NOT NULL,
    operation     varchar(255) NOT NULL,
    payload       jsonb,
    PRIMARY KEY (id)
);
