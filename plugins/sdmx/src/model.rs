//! The structure document: what the database says a structure is.

use serde::Deserialize;
use std::collections::BTreeMap;

/// Names (or descriptions) by language: `{"en": "Frequency"}`.
pub type Names = BTreeMap<String, String>;

/// Whether the structure is (re)published or deleted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    Upsert,
    Delete,
}

/// The maintainable classes this plugin publishes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum Class {
    AgencyScheme,
    Codelist,
    ConceptScheme,
    DataStructure,
    Dataflow,
}

impl Class {
    /// The SDMX information-model package of the class (URN syntax).
    pub fn package(self) -> &'static str {
        match self {
            Class::AgencyScheme => "base",
            Class::Codelist => "codelist",
            Class::ConceptScheme => "conceptscheme",
            Class::DataStructure | Class::Dataflow => "datastructure",
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Class::AgencyScheme => "AgencyScheme",
            Class::Codelist => "Codelist",
            Class::ConceptScheme => "ConceptScheme",
            Class::DataStructure => "DataStructure",
            Class::Dataflow => "Dataflow",
        }
    }

    /// The class of the items of an item scheme.
    pub fn item_class(self) -> Option<&'static str> {
        match self {
            Class::AgencyScheme => Some("Agency"),
            Class::Codelist => Some("Code"),
            Class::ConceptScheme => Some("Concept"),
            Class::DataStructure | Class::Dataflow => None,
        }
    }
}

/// A reference to a maintainable structure (or, with `item`, to an item of
/// one).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Reference {
    pub agency: String,
    pub id: String,
    #[serde(default = "default_version")]
    pub version: String,
    #[serde(default)]
    pub item: Option<String>,
}

/// An item of an item scheme (agency, code, concept).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Item {
    pub id: String,
    pub names: Names,
    #[serde(default)]
    pub descriptions: Names,
}

/// A dimension of a data structure.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Dimension {
    pub id: String,
    pub position: u32,
    pub concept: Reference,
    #[serde(default)]
    pub codelist: Option<Reference>,
}

/// The time dimension of a data structure.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TimeDimension {
    #[serde(default = "default_time_id")]
    pub id: String,
    pub position: u32,
    pub concept: Reference,
}

/// Where an attribute's values attach.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Attachment {
    /// To the whole data set.
    Dataset,
    /// To each observation.
    Observation,
}

/// An attribute of a data structure.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Attribute {
    pub id: String,
    /// `Mandatory` or `Conditional`.
    #[serde(default = "default_status")]
    pub status: String,
    pub concept: Reference,
    #[serde(default)]
    pub codelist: Option<Reference>,
    #[serde(default = "default_attachment")]
    pub attachment: Attachment,
}

/// The primary measure of a data structure.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Measure {
    #[serde(default = "default_measure_id")]
    pub id: String,
    pub concept: Reference,
}

/// One maintainable structure, whole.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Document {
    pub action: Action,
    pub class: Class,
    pub agency: String,
    pub id: String,
    #[serde(default = "default_version")]
    pub version: String,
    #[serde(default)]
    pub r#final: bool,
    #[serde(default)]
    pub names: Names,
    #[serde(default)]
    pub descriptions: Names,
    /// Who may see the structure (routing to topics guarded by ACLs).
    #[serde(default)]
    pub access_group: Option<String>,
    #[serde(default)]
    pub items: Vec<Item>,
    #[serde(default)]
    pub dimensions: Vec<Dimension>,
    #[serde(default)]
    pub time_dimension: Option<TimeDimension>,
    #[serde(default)]
    pub attributes: Vec<Attribute>,
    #[serde(default)]
    pub measure: Option<Measure>,
    /// The data structure of a dataflow.
    #[serde(default)]
    pub structure: Option<Reference>,
}

fn default_version() -> String {
    "1.0".into()
}

fn default_time_id() -> String {
    "TIME_PERIOD".into()
}

fn default_measure_id() -> String {
    "OBS_VALUE".into()
}

fn default_status() -> String {
    "Conditional".into()
}

fn default_attachment() -> Attachment {
    Attachment::Dataset
}

/// Whether `text` is an SDMX `IDType`: `[A-Za-z0-9_@$\-]+`.
pub fn is_id(text: &str) -> bool {
    !text.is_empty()
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'@' | b'$' | b'-'))
}

/// Whether `text` is an agency id: ids joined by dots (`TFFS.ABC`).
fn is_agency(text: &str) -> bool {
    text.split('.').all(is_id)
}

/// Whether `text` is an SDMX version: `1.0`, `2.1.3` (digits joined by dots;
/// SDMX 3.0 semantic versions may add a `-suffix`).
fn is_version(text: &str) -> bool {
    let (core, suffix) = match text.split_once('-') {
        Some((core, suffix)) => (core, Some(suffix)),
        None => (text, None),
    };
    let parts: Vec<&str> = core.split('.').collect();
    (2..=3).contains(&parts.len())
        && parts
            .iter()
            .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
        && suffix.is_none_or(is_id)
}

impl Reference {
    /// The URN of the referenced structure (of its item, if any), given the
    /// class of the maintainable and of the item.
    pub fn urn(&self, class: Class) -> String {
        let base = urn(class, &self.agency, &self.id, &self.version);
        match (&self.item, class.item_class()) {
            (Some(item), Some(item_class)) => {
                let package = class.package();
                let prefix = format!("urn:sdmx:org.sdmx.infomodel.{package}.{}=", class.name());
                let rest = base.strip_prefix(&prefix).unwrap_or(&base);
                format!("urn:sdmx:org.sdmx.infomodel.{package}.{item_class}={rest}.{item}")
            }
            _ => base,
        }
    }

    fn check(&self, what: &str, needs_item: bool) -> Result<(), String> {
        check_maintainable(what, &self.agency, &self.id, &self.version)?;
        match (&self.item, needs_item) {
            (Some(item), _) if !is_id(item) => {
                Err(format!("{what}: item {item:?} is not an SDMX id"))
            }
            (None, true) => Err(format!("{what}: the reference needs an `item`")),
            (Some(_), false) => Err(format!("{what}: the reference takes no `item`")),
            _ => Ok(()),
        }
    }
}

/// `urn:sdmx:org.sdmx.infomodel.{package}.{Class}={agency}:{id}({version})`.
pub fn urn(class: Class, agency: &str, id: &str, version: &str) -> String {
    format!(
        "urn:sdmx:org.sdmx.infomodel.{}.{}={agency}:{id}({version})",
        class.package(),
        class.name()
    )
}

fn check_maintainable(what: &str, agency: &str, id: &str, version: &str) -> Result<(), String> {
    if !is_agency(agency) {
        return Err(format!(
            "{what}: agency {agency:?} is not an SDMX agency id"
        ));
    }
    if !is_id(id) {
        return Err(format!(
            "{what}: id {id:?} is not an SDMX id (letters, digits, _ @ $ -)"
        ));
    }
    if !is_version(version) {
        return Err(format!(
            "{what}: version {version:?} is not an SDMX version such as 1.0"
        ));
    }
    Ok(())
}

impl Document {
    /// Parses and checks a structure document; the error says what is wrong.
    pub fn parse(text: &str) -> Result<Document, String> {
        let document: Document = serde_json::from_str(text)
            .map_err(|error| format!("not a structure document: {error}"))?;
        document.check()?;
        Ok(document)
    }

    fn check(&self) -> Result<(), String> {
        let what = format!(
            "{} {}:{}({})",
            self.class.name(),
            self.agency,
            self.id,
            self.version
        );
        check_maintainable(&what, &self.agency, &self.id, &self.version)?;
        if self.action == Action::Delete {
            return Ok(());
        }
        check_names(&what, &self.names)?;
        for item in &self.items {
            if !is_id(&item.id) {
                return Err(format!("{what}: item id {:?} is not an SDMX id", item.id));
            }
            check_names(&format!("{what}, item {}", item.id), &item.names)?;
        }
        match self.class {
            Class::AgencyScheme => {
                // SDMX 2.1 fixes an agency scheme's id, version and isFinal.
                if self.id != "AGENCIES" || self.version != "1.0" || self.r#final {
                    return Err(format!(
                        "{what}: an SDMX 2.1 agency scheme is AGENCIES, version 1.0, not final"
                    ));
                }
            }
            Class::Codelist | Class::ConceptScheme => {}
            Class::DataStructure => {
                if self.dimensions.is_empty() {
                    return Err(format!(
                        "{what}: a data structure needs at least one dimension"
                    ));
                }
                for dimension in &self.dimensions {
                    let at = format!("{what}, dimension {}", dimension.id);
                    dimension.concept.check(&at, true)?;
                    if let Some(codelist) = &dimension.codelist {
                        codelist.check(&at, false)?;
                    }
                }
                if let Some(time) = &self.time_dimension {
                    time.concept
                        .check(&format!("{what}, time dimension"), true)?;
                }
                for attribute in &self.attributes {
                    let at = format!("{what}, attribute {}", attribute.id);
                    if !matches!(attribute.status.as_str(), "Mandatory" | "Conditional") {
                        return Err(format!(
                            "{at}: status {:?} is neither Mandatory nor Conditional",
                            attribute.status
                        ));
                    }
                    attribute.concept.check(&at, true)?;
                    if let Some(codelist) = &attribute.codelist {
                        codelist.check(&at, false)?;
                    }
                }
                let Some(measure) = &self.measure else {
                    return Err(format!("{what}: a data structure needs a measure"));
                };
                measure.concept.check(&format!("{what}, measure"), true)?;
            }
            Class::Dataflow => {
                let Some(structure) = &self.structure else {
                    return Err(format!("{what}: a dataflow needs its `structure`"));
                };
                structure.check(&format!("{what}, structure"), false)?;
            }
        }
        Ok(())
    }

    /// The structure's URN.
    pub fn urn(&self) -> String {
        urn(self.class, &self.agency, &self.id, &self.version)
    }

    /// The URN of item `item` of this scheme.
    pub fn item_urn(&self, item: &str) -> String {
        Reference {
            agency: self.agency.clone(),
            id: self.id.clone(),
            version: self.version.clone(),
            item: Some(item.to_string()),
        }
        .urn(self.class)
    }

    /// Fills a topic template (checked by [`check_topic_template`]).
    pub fn render_topic(&self, template: &str) -> String {
        template
            .replace("{agency}", &self.agency)
            .replace("{class}", self.class.name())
            .replace("{id}", &self.id)
            .replace(
                "{access_group}",
                self.access_group.as_deref().unwrap_or("public"),
            )
    }
}

fn check_names(what: &str, names: &Names) -> Result<(), String> {
    if names.is_empty() {
        return Err(format!("{what}: needs a name in at least one language"));
    }
    if let Some(language) = names.keys().find(|language| !is_language(language)) {
        return Err(format!("{what}: {language:?} is not a language tag"));
    }
    Ok(())
}

/// A plausible `xml:lang`: letters, digits and hyphens, starting with a
/// letter.
fn is_language(tag: &str) -> bool {
    tag.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
        && tag.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
}

/// Checks a topic template's placeholders.
pub fn check_topic_template(template: &str) -> Result<(), String> {
    let mut rest = template;
    while let Some(start) = rest.find('{') {
        let end = rest[start..]
            .find('}')
            .ok_or_else(|| format!("unclosed `{{` in {template:?}"))?;
        let name = &rest[start + 1..start + end];
        if !matches!(name, "agency" | "class" | "id" | "access_group") {
            return Err(format!(
                "unknown placeholder {{{name}}} in {template:?} (known: agency, class, id, access_group)"
            ));
        }
        rest = &rest[start + end + 1..];
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urns_follow_the_sdmx_syntax() {
        assert_eq!(
            urn(Class::Codelist, "SDMX", "CL_FREQ", "2.0"),
            "urn:sdmx:org.sdmx.infomodel.codelist.Codelist=SDMX:CL_FREQ(2.0)"
        );
        assert_eq!(
            urn(Class::Dataflow, "TFFS.ABC", "EXR", "1.0"),
            "urn:sdmx:org.sdmx.infomodel.datastructure.Dataflow=TFFS.ABC:EXR(1.0)"
        );
        let code = Reference {
            agency: "TEST".into(),
            id: "CL_FREQ".into(),
            version: "1".into(),
            item: Some("A".into()),
        };
        assert_eq!(
            code.urn(Class::Codelist),
            "urn:sdmx:org.sdmx.infomodel.codelist.Code=TEST:CL_FREQ(1).A"
        );
        let concept = Reference {
            item: Some("FREQ".into()),
            ..code.clone()
        };
        assert_eq!(
            concept.urn(Class::ConceptScheme),
            "urn:sdmx:org.sdmx.infomodel.conceptscheme.Concept=TEST:CL_FREQ(1).FREQ"
        );
        assert_eq!(
            urn(Class::AgencyScheme, "SDMX", "AGENCIES", "1.0"),
            "urn:sdmx:org.sdmx.infomodel.base.AgencyScheme=SDMX:AGENCIES(1.0)"
        );
    }

    #[test]
    fn bad_documents_are_refused_with_what_is_wrong() {
        let cases = [
            (
                r#"{"action":"upsert","class":"Codelist","agency":"SDMX","id":"CL FREQ","names":{"en":"x"}}"#,
                "id \"CL FREQ\" is not an SDMX id",
            ),
            (
                r#"{"action":"upsert","class":"Codelist","agency":"SDMX","id":"CL","version":"one","names":{"en":"x"}}"#,
                "not an SDMX version",
            ),
            (
                r#"{"action":"upsert","class":"Codelist","agency":"SDMX","id":"CL"}"#,
                "needs a name",
            ),
            (
                r#"{"action":"upsert","class":"Hierarchy","agency":"SDMX","id":"CL"}"#,
                "not a structure document",
            ),
            (
                r#"{"action":"upsert","class":"Dataflow","agency":"SDMX","id":"DF","names":{"en":"x"}}"#,
                "needs its `structure`",
            ),
            (
                r#"{"action":"upsert","class":"DataStructure","agency":"SDMX","id":"D","names":{"en":"x"},"dimensions":[{"id":"FREQ","position":1,"concept":{"agency":"SDMX","id":"CS"}}],"measure":{"concept":{"agency":"SDMX","id":"CS","item":"OBS_VALUE"}}}"#,
                "needs an `item`",
            ),
        ];
        for (text, expected) in cases {
            let error = Document::parse(text).unwrap_err();
            assert!(error.contains(expected), "{text}: {error}");
        }
        // A deletion needs only the identity.
        let delete =
            Document::parse(r#"{"action":"delete","class":"Codelist","agency":"SDMX","id":"CL"}"#)
                .unwrap();
        assert_eq!(
            delete.urn(),
            "urn:sdmx:org.sdmx.infomodel.codelist.Codelist=SDMX:CL(1.0)"
        );
    }

    #[test]
    fn topic_templates_know_their_placeholders() {
        assert!(check_topic_template("sdmx.{agency}.{access_group}").is_ok());
        assert!(
            check_topic_template("sdmx.{owner}")
                .unwrap_err()
                .contains("{owner}")
        );
    }
}
