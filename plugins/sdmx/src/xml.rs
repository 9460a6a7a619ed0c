//! SDMX-ML 2.1 structure messages.
//!
//! Element order follows the official schema (SDMXStructure*.xsd): the
//! header's `ID`, `Test`, `Prepared`, `Sender`; a maintainable's `Name`s
//! before its items; in a data structure, `DimensionList`, `AttributeList`,
//! `MeasureList`. References are written as `Ref` elements (unqualified, as
//! the schema's local elements are).

use crate::Header;
use crate::model::{Attachment, Class, Document, Names, Reference};
use std::fmt::Write as _;

const MESSAGE: &str = "http://www.sdmx.org/resources/sdmxml/schemas/v2_1/message";
const STRUCTURE: &str = "http://www.sdmx.org/resources/sdmxml/schemas/v2_1/structure";
const COMMON: &str = "http://www.sdmx.org/resources/sdmxml/schemas/v2_1/common";

/// A tiny XML writer: elements opened and closed in order, text escaped.
struct Xml {
    out: String,
    open: Vec<&'static str>,
}

impl Xml {
    fn new() -> Xml {
        Xml {
            out: String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"),
            open: Vec::new(),
        }
    }

    fn start(&mut self, name: &'static str, attributes: &[(&str, &str)]) -> &mut Xml {
        self.tag(name, attributes);
        self.out.push('>');
        self.open.push(name);
        self
    }

    fn empty(&mut self, name: &'static str, attributes: &[(&str, &str)]) -> &mut Xml {
        self.tag(name, attributes);
        self.out.push_str("/>");
        self
    }

    fn text(&mut self, name: &'static str, attributes: &[(&str, &str)], text: &str) -> &mut Xml {
        self.tag(name, attributes);
        self.out.push('>');
        escape(&mut self.out, text);
        let _ = write!(self.out, "</{name}>");
        self
    }

    fn end(&mut self) -> &mut Xml {
        let name = self.open.pop().expect("an open element");
        let _ = write!(self.out, "</{name}>");
        self
    }

    fn tag(&mut self, name: &str, attributes: &[(&str, &str)]) {
        let _ = write!(self.out, "<{name}");
        for (attribute, value) in attributes {
            let _ = write!(self.out, " {attribute}=\"");
            escape(&mut self.out, value);
            self.out.push('"');
        }
    }

    fn finish(self) -> String {
        assert!(self.open.is_empty(), "unclosed elements: {:?}", self.open);
        self.out
    }
}

fn escape(out: &mut String, text: &str) {
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c => out.push(c),
        }
    }
}

/// The whole structure message for `document`.
pub fn structure_message(document: &Document, header: &Header<'_>) -> String {
    let mut xml = Xml::new();
    xml.start(
        "mes:Structure",
        &[
            ("xmlns:mes", MESSAGE),
            ("xmlns:str", STRUCTURE),
            ("xmlns:com", COMMON),
        ],
    );
    xml.start("mes:Header", &[])
        .text("mes:ID", &[], &header.id)
        .text("mes:Test", &[], if header.test { "true" } else { "false" })
        .text("mes:Prepared", &[], &header.prepared)
        .empty("mes:Sender", &[("id", header.sender)])
        .end();
    xml.start("mes:Structures", &[]);
    let container = match document.class {
        Class::AgencyScheme => "str:OrganisationSchemes",
        Class::Codelist => "str:Codelists",
        Class::ConceptScheme => "str:Concepts",
        Class::DataStructure => "str:DataStructures",
        Class::Dataflow => "str:Dataflows",
    };
    xml.start(container, &[]);
    maintainable(&mut xml, document);
    xml.end().end().end();
    xml.finish()
}

fn maintainable(xml: &mut Xml, document: &Document) {
    let element = match document.class {
        Class::AgencyScheme => "str:AgencyScheme",
        Class::Codelist => "str:Codelist",
        Class::ConceptScheme => "str:ConceptScheme",
        Class::DataStructure => "str:DataStructure",
        Class::Dataflow => "str:Dataflow",
    };
    let urn = document.urn();
    xml.start(
        element,
        &[
            ("id", &document.id),
            ("urn", &urn),
            ("agencyID", &document.agency),
            ("version", &document.version),
            ("isFinal", if document.r#final { "true" } else { "false" }),
        ],
    );
    names(xml, &document.names, &document.descriptions);
    match document.class {
        Class::AgencyScheme | Class::Codelist | Class::ConceptScheme => {
            let item_element = match document.class {
                Class::AgencyScheme => "str:Agency",
                Class::Codelist => "str:Code",
                _ => "str:Concept",
            };
            for item in &document.items {
                let urn = document.item_urn(&item.id);
                xml.start(item_element, &[("id", &item.id), ("urn", &urn)]);
                names(xml, &item.names, &item.descriptions);
                xml.end();
            }
        }
        Class::DataStructure => data_structure_components(xml, document),
        Class::Dataflow => {
            if let Some(structure) = &document.structure {
                xml.start("str:Structure", &[]);
                reference(xml, structure, "datastructure", "DataStructure");
                xml.end();
            }
        }
    }
    xml.end();
}

fn names(xml: &mut Xml, names: &Names, descriptions: &Names) {
    for (language, name) in names {
        xml.text("com:Name", &[("xml:lang", language)], name);
    }
    for (language, description) in descriptions {
        xml.text("com:Description", &[("xml:lang", language)], description);
    }
}

/// A `Ref` to a maintainable, or to a concept (an item of a scheme).
fn reference(xml: &mut Xml, to: &Reference, package: &str, class: &str) {
    match &to.item {
        Some(item) => xml.empty(
            "Ref",
            &[
                ("id", item),
                ("maintainableParentID", &to.id),
                ("maintainableParentVersion", &to.version),
                ("agencyID", &to.agency),
                ("package", package),
                ("class", class),
            ],
        ),
        None => xml.empty(
            "Ref",
            &[
                ("id", &to.id),
                ("version", &to.version),
                ("agencyID", &to.agency),
                ("package", package),
                ("class", class),
            ],
        ),
    };
}

fn concept_identity(xml: &mut Xml, concept: &Reference) {
    xml.start("str:ConceptIdentity", &[]);
    reference(xml, concept, "conceptscheme", "Concept");
    xml.end();
}

fn enumeration(xml: &mut Xml, codelist: Option<&Reference>) {
    if let Some(codelist) = codelist {
        xml.start("str:LocalRepresentation", &[])
            .start("str:Enumeration", &[]);
        reference(xml, codelist, "codelist", "Codelist");
        xml.end().end();
    }
}

fn data_structure_components(xml: &mut Xml, document: &Document) {
    xml.start("str:DataStructureComponents", &[]);
    let urn = document.urn();
    let component_urn = |descriptor: &str, id: &str| {
        let rest = urn
            .split_once('=')
            .map(|(_, rest)| rest)
            .unwrap_or_default();
        format!("urn:sdmx:org.sdmx.infomodel.datastructure.{descriptor}={rest}.{id}")
    };

    xml.start(
        "str:DimensionList",
        &[
            ("id", "DimensionDescriptor"),
            (
                "urn",
                &component_urn("DimensionDescriptor", "DimensionDescriptor"),
            ),
        ],
    );
    let mut dimensions: Vec<_> = document.dimensions.iter().collect();
    dimensions.sort_by_key(|d| d.position);
    for dimension in dimensions {
        let position = dimension.position.to_string();
        xml.start(
            "str:Dimension",
            &[
                ("id", &dimension.id),
                ("urn", &component_urn("Dimension", &dimension.id)),
                ("position", &position),
            ],
        );
        concept_identity(xml, &dimension.concept);
        enumeration(xml, dimension.codelist.as_ref());
        xml.end();
    }
    if let Some(time) = &document.time_dimension {
        let position = time.position.to_string();
        xml.start(
            "str:TimeDimension",
            &[
                ("id", &time.id),
                ("urn", &component_urn("TimeDimension", &time.id)),
                ("position", &position),
            ],
        );
        concept_identity(xml, &time.concept);
        xml.start("str:LocalRepresentation", &[])
            .empty("str:TextFormat", &[("textType", "ObservationalTimePeriod")])
            .end();
        xml.end();
    }
    xml.end();

    let measure_id = document
        .measure
        .as_ref()
        .map(|m| m.id.as_str())
        .unwrap_or("OBS_VALUE");
    if !document.attributes.is_empty() {
        xml.start(
            "str:AttributeList",
            &[
                ("id", "AttributeDescriptor"),
                (
                    "urn",
                    &component_urn("AttributeDescriptor", "AttributeDescriptor"),
                ),
            ],
        );
        for attribute in &document.attributes {
            xml.start(
                "str:Attribute",
                &[
                    ("id", &attribute.id),
                    ("urn", &component_urn("DataAttribute", &attribute.id)),
                    ("assignmentStatus", &attribute.status),
                ],
            );
            concept_identity(xml, &attribute.concept);
            enumeration(xml, attribute.codelist.as_ref());
            xml.start("str:AttributeRelationship", &[]);
            match attribute.attachment {
                Attachment::Dataset => {
                    xml.empty("str:None", &[]);
                }
                Attachment::Observation => {
                    xml.start("str:PrimaryMeasure", &[])
                        .empty("Ref", &[("id", measure_id)])
                        .end();
                }
            }
            xml.end().end();
        }
        xml.end();
    }

    if let Some(measure) = &document.measure {
        xml.start(
            "str:MeasureList",
            &[
                ("id", "MeasureDescriptor"),
                (
                    "urn",
                    &component_urn("MeasureDescriptor", "MeasureDescriptor"),
                ),
            ],
        );
        xml.start(
            "str:PrimaryMeasure",
            &[
                ("id", &measure.id),
                ("urn", &component_urn("PrimaryMeasure", &measure.id)),
            ],
        );
        concept_identity(xml, &measure.concept);
        xml.end().end();
    }
    xml.end();
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Document;

    const MES: &str = MESSAGE;

    fn header() -> Header<'static> {
        Header {
            id: "F0123".into(),
            test: false,
            prepared: "2026-11-24T10:00:00Z".into(),
            sender: "FERRY",
        }
    }

    fn children<'a>(node: roxmltree::Node<'a, 'a>) -> Vec<roxmltree::Node<'a, 'a>> {
        node.children().filter(|n| n.is_element()).collect()
    }

    #[test]
    fn a_codelist_message_has_the_header_and_every_code_with_its_names() {
        let document = Document::parse(
            r#"{"action":"upsert","class":"Codelist","agency":"SDMX","id":"CL_FREQ","version":"2.0","final":true,
                "names":{"en":"Frequency","fr":"Fréquence"},
                "items":[{"id":"A","names":{"en":"Annual","fr":"Annuel"}},{"id":"M","names":{"en":"Monthly & more <x>"}}]}"#,
        )
        .unwrap();
        let text = structure_message(&document, &header());
        let xml = roxmltree::Document::parse(&text).unwrap();
        let root = xml.root_element();
        assert_eq!(root.tag_name().name(), "Structure");
        assert_eq!(root.tag_name().namespace(), Some(MES));
        let parts = children(root);
        assert_eq!(parts[0].tag_name().name(), "Header");
        let header: Vec<_> = children(parts[0])
            .iter()
            .map(|n| n.tag_name().name())
            .collect();
        assert_eq!(header, ["ID", "Test", "Prepared", "Sender"]);
        let codelist = xml
            .descendants()
            .find(|n| n.has_tag_name((STRUCTURE, "Codelist")))
            .unwrap();
        assert_eq!(codelist.attribute("id"), Some("CL_FREQ"));
        assert_eq!(codelist.attribute("agencyID"), Some("SDMX"));
        assert_eq!(
            codelist.attribute("urn"),
            Some("urn:sdmx:org.sdmx.infomodel.codelist.Codelist=SDMX:CL_FREQ(2.0)")
        );
        let names: Vec<_> = children(codelist)
            .into_iter()
            .filter(|n| n.has_tag_name((COMMON, "Name")))
            .map(|n| {
                (
                    n.attribute(("http://www.w3.org/XML/1998/namespace", "lang"))
                        .unwrap(),
                    n.text().unwrap(),
                )
            })
            .collect();
        assert_eq!(names, [("en", "Frequency"), ("fr", "Fréquence")]);
        let codes: Vec<_> = codelist
            .children()
            .filter(|n| n.has_tag_name((STRUCTURE, "Code")))
            .collect();
        assert_eq!(codes.len(), 2);
        assert_eq!(
            codes[0].attribute("urn"),
            Some("urn:sdmx:org.sdmx.infomodel.codelist.Code=SDMX:CL_FREQ(2.0).A")
        );
        assert_eq!(
            children(codes[1])[0].text(),
            Some("Monthly & more <x>"),
            "text is escaped and reads back"
        );
    }

    #[test]
    fn a_data_structure_references_its_concepts_and_codelists() {
        let document = Document::parse(
            r#"{"action":"upsert","class":"DataStructure","agency":"ECB","id":"ECB_EXR1","version":"1.0",
                "names":{"en":"Exchange rates"},
                "dimensions":[{"id":"CURRENCY","position":2,"concept":{"agency":"ECB","id":"ECB_CONCEPTS","item":"CURRENCY"},"codelist":{"agency":"ECB","id":"CL_CURRENCY"}},
                              {"id":"FREQ","position":1,"concept":{"agency":"ECB","id":"ECB_CONCEPTS","item":"FREQ"},"codelist":{"agency":"SDMX","id":"CL_FREQ","version":"2.0"}}],
                "time_dimension":{"position":3,"concept":{"agency":"ECB","id":"ECB_CONCEPTS","item":"TIME_PERIOD"}},
                "attributes":[{"id":"OBS_STATUS","status":"Mandatory","attachment":"observation","concept":{"agency":"ECB","id":"ECB_CONCEPTS","item":"OBS_STATUS"}}],
                "measure":{"concept":{"agency":"ECB","id":"ECB_CONCEPTS","item":"OBS_VALUE"}}}"#,
        )
        .unwrap();
        let text = structure_message(&document, &header());
        let xml = roxmltree::Document::parse(&text).unwrap();
        let components = xml
            .descendants()
            .find(|n| n.has_tag_name((STRUCTURE, "DataStructureComponents")))
            .unwrap();
        let lists: Vec<_> = children(components)
            .iter()
            .map(|n| n.tag_name().name())
            .collect();
        assert_eq!(lists, ["DimensionList", "AttributeList", "MeasureList"]);
        let dimensions: Vec<_> = xml
            .descendants()
            .filter(|n| n.has_tag_name((STRUCTURE, "Dimension")))
            .map(|n| (n.attribute("id").unwrap(), n.attribute("position").unwrap()))
            .collect();
        assert_eq!(dimensions, [("FREQ", "1"), ("CURRENCY", "2")]);
        let enumeration = xml
            .descendants()
            .find(|n| n.has_tag_name((STRUCTURE, "Enumeration")))
            .unwrap();
        let reference = children(enumeration)[0];
        assert_eq!(reference.tag_name().name(), "Ref");
        assert_eq!(reference.attribute("id"), Some("CL_FREQ"));
        assert_eq!(reference.attribute("version"), Some("2.0"));
        assert_eq!(reference.attribute("class"), Some("Codelist"));
    }
}
