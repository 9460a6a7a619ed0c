-- Edits a registry service makes; each transaction says what ferry publishes.

-- 1. One code added: the whole CL_FREQ codelist is published again.
INSERT INTO codes (codelist_agency, codelist_id, codelist_version, id, names, position)
VALUES ('SDMX', 'CL_FREQ', '2.0', 'W', '{"en": "Weekly", "fr": "Hebdomadaire"}', 4);

-- 2. Two structures in one transaction: one Kafka transaction holding both.
BEGIN;
UPDATE concepts SET names = '{"en": "Currency", "fr": "Devise"}'
    WHERE scheme_agency = 'ECB' AND scheme_id = 'ECB_CONCEPTS' AND id = 'CURRENCY';
INSERT INTO codes (codelist_agency, codelist_id, codelist_version, id, names, position)
VALUES ('ECB', 'CL_CURRENCY', '1.0', 'JPY', '{"en": "Japanese yen"}', 3);
COMMIT;

-- 3. A deletion and a modification together: the deletion (a tombstone)
--    and the modification go out as separate, consecutive Kafka
--    transactions, in this order.
BEGIN;
DELETE FROM dataflows WHERE agency = 'ECB' AND id = 'EXR_INTERNAL';
UPDATE codes SET names = '{"en": "Estimated"}'
    WHERE codelist_agency = 'ECB' AND codelist_id = 'CL_OBS_STATUS' AND id = 'E';
COMMIT;
