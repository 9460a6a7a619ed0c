//! SDMX-JSON 1.0 structure messages: `{meta, data}`, references as URNs.

use crate::Header;
use crate::model::{Attachment, Class, Document, Names, Reference};
use serde_json::{Map, Value, json};

/// The whole structure message for `document`.
pub fn structure_message(document: &Document, header: &Header<'_>) -> String {
    let (container, structure) = match document.class {
        Class::AgencyScheme => ("agencySchemes", item_scheme(document, "agencies")),
        Class::Codelist => ("codelists", item_scheme(document, "codes")),
        Class::ConceptScheme => ("conceptSchemes", item_scheme(document, "concepts")),
        Class::DataStructure => ("dataStructures", data_structure(document)),
        Class::Dataflow => ("dataflows", dataflow(document)),
    };
    json!({
        "meta": {
            "id": header.id,
            "test": header.test,
            "prepared": header.prepared,
            "sender": {"id": header.sender},
        },
        "data": {container: [structure]},
    })
    .to_string()
}

/// `name` (the first language's, for SDMX-JSON 1.0 readers) and `names`.
fn named(object: &mut Map<String, Value>, names: &Names, descriptions: &Names) {
    if let Some(name) = names.get("en").or_else(|| names.values().next()) {
        object.insert("name".into(), json!(name));
    }
    object.insert("names".into(), json!(names));
    if !descriptions.is_empty() {
        if let Some(description) = descriptions
            .get("en")
            .or_else(|| descriptions.values().next())
        {
            object.insert("description".into(), json!(description));
        }
        object.insert("descriptions".into(), json!(descriptions));
    }
}

fn maintainable(document: &Document) -> Map<String, Value> {
    let mut object = Map::new();
    object.insert("id".into(), json!(document.id));
    object.insert("agencyID".into(), json!(document.agency));
    object.insert("version".into(), json!(document.version));
    object.insert("isFinal".into(), json!(document.r#final));
    named(&mut object, &document.names, &document.descriptions);
    object.insert(
        "links".into(),
        json!([{"rel": "self", "urn": document.urn(), "type": document.class.name().to_lowercase()}]),
    );
    object
}

fn item_scheme(document: &Document, items: &str) -> Value {
    let mut object = maintainable(document);
    let list: Vec<Value> = document
        .items
        .iter()
        .map(|item| {
            let mut entry = Map::new();
            entry.insert("id".into(), json!(item.id));
            named(&mut entry, &item.names, &item.descriptions);
            entry.insert(
                "links".into(),
                json!([{"rel": "self", "urn": document.item_urn(&item.id)}]),
            );
            Value::Object(entry)
        })
        .collect();
    object.insert(items.into(), Value::Array(list));
    Value::Object(object)
}

fn local_representation(codelist: Option<&Reference>) -> Option<Value> {
    codelist.map(|codelist| json!({"enumeration": codelist.urn(Class::Codelist)}))
}

fn data_structure(document: &Document) -> Value {
    let mut object = maintainable(document);
    let mut dimensions: Vec<_> = document.dimensions.iter().collect();
    dimensions.sort_by_key(|d| d.position);
    let dimensions: Vec<Value> = dimensions
        .into_iter()
        .map(|d| {
            let mut entry = json!({
                "id": d.id,
                "position": d.position,
                "conceptIdentity": d.concept.urn(Class::ConceptScheme),
            });
            if let Some(representation) = local_representation(d.codelist.as_ref()) {
                entry["localRepresentation"] = representation;
            }
            entry
        })
        .collect();
    let time_dimensions: Vec<Value> = document
        .time_dimension
        .iter()
        .map(|t| {
            json!({
                "id": t.id,
                "position": t.position,
                "conceptIdentity": t.concept.urn(Class::ConceptScheme),
                "localRepresentation": {"textFormat": {"textType": "ObservationalTimePeriod"}},
            })
        })
        .collect();
    let measure_id = document
        .measure
        .as_ref()
        .map(|m| m.id.as_str())
        .unwrap_or("OBS_VALUE");
    let attributes: Vec<Value> = document
        .attributes
        .iter()
        .map(|a| {
            let relationship = match a.attachment {
                Attachment::Dataset => json!({"none": {}}),
                Attachment::Observation => json!({"primaryMeasure": measure_id}),
            };
            let mut entry = json!({
                "id": a.id,
                "assignmentStatus": a.status,
                "conceptIdentity": a.concept.urn(Class::ConceptScheme),
                "attributeRelationship": relationship,
            });
            if let Some(representation) = local_representation(a.codelist.as_ref()) {
                entry["localRepresentation"] = representation;
            }
            entry
        })
        .collect();
    let mut components = json!({
        "dimensionList": {
            "id": "DimensionDescriptor",
            "dimensions": dimensions,
            "timeDimensions": time_dimensions,
        },
    });
    if !attributes.is_empty() {
        components["attributeList"] =
            json!({"id": "AttributeDescriptor", "attributes": attributes});
    }
    if let Some(measure) = &document.measure {
        components["measureList"] = json!({
            "id": "MeasureDescriptor",
            "primaryMeasure": {
                "id": measure.id,
                "conceptIdentity": measure.concept.urn(Class::ConceptScheme),
            },
        });
    }
    object.insert("dataStructureComponents".into(), components);
    Value::Object(object)
}

fn dataflow(document: &Document) -> Value {
    let mut object = maintainable(document);
    if let Some(structure) = &document.structure {
        object.insert(
            "structure".into(),
            json!(structure.urn(Class::DataStructure)),
        );
    }
    Value::Object(object)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_codelist_in_sdmx_json_carries_meta_codes_and_urns() {
        let document = Document::parse(
            r#"{"action":"upsert","class":"Codelist","agency":"SDMX","id":"CL_FREQ","names":{"en":"Frequency","de":"Frequenz"},
                "items":[{"id":"A","names":{"en":"Annual"}}]}"#,
        )
        .unwrap();
        let header = Header {
            id: "F1".into(),
            test: true,
            prepared: "2026-11-24T10:00:00Z".into(),
            sender: "FERRY",
        };
        let message: Value = serde_json::from_str(&structure_message(&document, &header)).unwrap();
        assert_eq!(message["meta"]["sender"]["id"], "FERRY");
        assert_eq!(message["meta"]["test"], true);
        let codelist = &message["data"]["codelists"][0];
        assert_eq!(codelist["id"], "CL_FREQ");
        assert_eq!(codelist["name"], "Frequency");
        assert_eq!(codelist["names"]["de"], "Frequenz");
        assert_eq!(
            codelist["links"][0]["urn"],
            "urn:sdmx:org.sdmx.infomodel.codelist.Codelist=SDMX:CL_FREQ(1.0)"
        );
        assert_eq!(codelist["codes"][0]["id"], "A");
    }
}
