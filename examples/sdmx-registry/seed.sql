-- A starting registry: the SDMX agency scheme, three codelists, a concept
-- scheme, the ECB exchange-rate DSD and its dataflow. One transaction: one
-- message per structure, published together.
BEGIN;
INSERT INTO agency_schemes (agency, names) VALUES ('SDMX', '{"en": "SDMX Agency Scheme"}');
INSERT INTO agencies (scheme_agency, scheme_id, scheme_version, id, names, position) VALUES
    ('SDMX', 'AGENCIES', '1.0', 'ECB', '{"en": "European Central Bank", "de": "Europäische Zentralbank"}', 1),
    ('SDMX', 'AGENCIES', '1.0', 'IMF', '{"en": "International Monetary Fund"}', 2);

INSERT INTO codelists (agency, id, version, names, is_final) VALUES
    ('SDMX', 'CL_FREQ', '2.0', '{"en": "Frequency", "fr": "Fréquence"}', true),
    ('ECB', 'CL_CURRENCY', '1.0', '{"en": "Currency code list"}', false),
    ('ECB', 'CL_OBS_STATUS', '1.0', '{"en": "Observation status"}', false);
INSERT INTO codes (codelist_agency, codelist_id, codelist_version, id, names, position) VALUES
    ('SDMX', 'CL_FREQ', '2.0', 'A', '{"en": "Annual", "fr": "Annuel"}', 1),
    ('SDMX', 'CL_FREQ', '2.0', 'Q', '{"en": "Quarterly", "fr": "Trimestriel"}', 2),
    ('SDMX', 'CL_FREQ', '2.0', 'M', '{"en": "Monthly", "fr": "Mensuel"}', 3),
    ('ECB', 'CL_CURRENCY', '1.0', 'EUR', '{"en": "Euro"}', 1),
    ('ECB', 'CL_CURRENCY', '1.0', 'USD', '{"en": "US dollar"}', 2),
    ('ECB', 'CL_OBS_STATUS', '1.0', 'A', '{"en": "Normal value"}', 1),
    ('ECB', 'CL_OBS_STATUS', '1.0', 'E', '{"en": "Estimated value"}', 2);

INSERT INTO concept_schemes (agency, id, version, names) VALUES
    ('ECB', 'ECB_CONCEPTS', '1.0', '{"en": "ECB concepts"}');
INSERT INTO concepts (scheme_agency, scheme_id, scheme_version, id, names, position) VALUES
    ('ECB', 'ECB_CONCEPTS', '1.0', 'FREQ', '{"en": "Frequency"}', 1),
    ('ECB', 'ECB_CONCEPTS', '1.0', 'CURRENCY', '{"en": "Currency"}', 2),
    ('ECB', 'ECB_CONCEPTS', '1.0', 'TIME_PERIOD', '{"en": "Time period"}', 3),
    ('ECB', 'ECB_CONCEPTS', '1.0', 'OBS_VALUE', '{"en": "Observation value"}', 4),
    ('ECB', 'ECB_CONCEPTS', '1.0', 'OBS_STATUS', '{"en": "Observation status"}', 5);

INSERT INTO data_structures (agency, id, version, names) VALUES
    ('ECB', 'ECB_EXR1', '1.0', '{"en": "Exchange Rates"}');
INSERT INTO dsd_components (dsd_agency, dsd_id, dsd_version, id, kind, position,
                            concept_agency, concept_scheme, concept_version, concept_id,
                            codelist_agency, codelist_id, codelist_version, status, attachment) VALUES
    ('ECB', 'ECB_EXR1', '1.0', 'FREQ', 'dimension', 1, 'ECB', 'ECB_CONCEPTS', '1.0', 'FREQ', 'SDMX', 'CL_FREQ', '2.0', 'Conditional', 'dataset'),
    ('ECB', 'ECB_EXR1', '1.0', 'CURRENCY', 'dimension', 2, 'ECB', 'ECB_CONCEPTS', '1.0', 'CURRENCY', 'ECB', 'CL_CURRENCY', '1.0', 'Conditional', 'dataset'),
    ('ECB', 'ECB_EXR1', '1.0', 'TIME_PERIOD', 'time_dimension', 3, 'ECB', 'ECB_CONCEPTS', '1.0', 'TIME_PERIOD', NULL, NULL, NULL, 'Conditional', 'dataset'),
    ('ECB', 'ECB_EXR1', '1.0', 'OBS_STATUS', 'attribute', 0, 'ECB', 'ECB_CONCEPTS', '1.0', 'OBS_STATUS', 'ECB', 'CL_OBS_STATUS', '1.0', 'Mandatory', 'observation'),
    ('ECB', 'ECB_EXR1', '1.0', 'OBS_VALUE', 'measure', 0, 'ECB', 'ECB_CONCEPTS', '1.0', 'OBS_VALUE', NULL, NULL, NULL, 'Conditional', 'dataset');

INSERT INTO dataflows (agency, id, version, names, dsd_agency, dsd_id, dsd_version, access_group) VALUES
    ('ECB', 'EXR', '1.0', '{"en": "Exchange rates"}', 'ECB', 'ECB_EXR1', '1.0', 'public'),
    ('ECB', 'EXR_INTERNAL', '1.0', '{"en": "Exchange rates, internal"}', 'ECB', 'ECB_EXR1', '1.0', 'internal');
COMMIT;
