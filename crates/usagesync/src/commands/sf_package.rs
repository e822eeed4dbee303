//! The Salesforce metadata package `usagesync setup salesforce` writes: which custom fields the
//! config's workflows write or key on (from preflight's requirements), the type each one gets,
//! and their Metadata API XML in the classic format `sf project deploy start --metadata-dir`
//! deploys: `package.xml`, `objects/<Object>.object` and a permission set opening the fields to
//! the integration user. It owns a small XML writer too, so
//! every name and text from the config goes into the files escaped.

use std::collections::BTreeMap;
use std::fmt;

use engine::preflight::{Expect, Requirement, Use};
use serde::Serialize;

/// The Metadata API's namespace, on every file's root element.
pub const METADATA_NS: &str = "http://soap.sforce.com/2006/04/metadata";

/// A custom field's Metadata API type, with the sizes it is created with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(tag = "type")]
pub enum Kind {
    /// Room for any count or score usagesync writes, with two decimals for shares and scores.
    Number {
        precision: u8,
        scale: u8,
    },
    /// usagesync writes instants (ISO 8601 with a time), so a Date field would drop the time.
    DateTime,
    Text {
        length: u32,
    },
    /// Free text of any length, such as an NPS verbatim.
    LongTextArea {
        length: u32,
        visible_lines: u8,
    },
    Checkbox,
}

impl Kind {
    /// The `<type>` value.
    fn metadata_type(self) -> &'static str {
        match self {
            Kind::Number { .. } => "Number",
            Kind::DateTime => "DateTime",
            Kind::Text { .. } => "Text",
            Kind::LongTextArea { .. } => "LongTextArea",
            Kind::Checkbox => "Checkbox",
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Kind::Number { precision, scale } => write!(f, "Number({precision}, {scale})"),
            Kind::DateTime => write!(f, "DateTime"),
            Kind::Text { length } => write!(f, "Text({length})"),
            Kind::LongTextArea { length, .. } => write!(f, "LongTextArea({length})"),
            Kind::Checkbox => write!(f, "Checkbox"),
        }
    }
}

const NUMBER: Kind = Kind::Number { precision: 18, scale: 2 };
const TEXT: Kind = Kind::Text { length: 255 };
const LONG_TEXT: Kind = Kind::LongTextArea { length: 32768, visible_lines: 3 };

/// One workflow's use of a field.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Usage {
    pub workflow: String,
    #[serde(rename = "use")]
    pub usage: Use,
    /// The config key naming the field.
    pub key: String,
}

/// One custom field of the package.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Field {
    /// The object as the Metadata API names it: Task and Event fields are Activity's.
    pub object: String,
    /// The objects as the config names them (what `--remote` describes).
    pub sobjects: Vec<String>,
    pub name: String,
    pub label: String,
    #[serde(flatten)]
    pub kind: Kind,
    /// External ID, unique and case-insensitive: what usagesync's upserts key on.
    pub external_id: bool,
    pub uses: Vec<Usage>,
}

impl Field {
    /// `Object.Field`, as `package.xml` lists it.
    pub fn member(&self) -> String {
        format!("{}.{}", self.object, self.name)
    }

    /// The type and its key attributes, for people.
    pub fn describe(&self) -> String {
        if self.external_id { format!("{}, External ID, unique", self.kind) } else { self.kind.to_string() }
    }
}

/// A field the config names that the package leaves out, and why.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Skipped {
    pub object: String,
    pub field: String,
    pub reason: &'static str,
}

/// What the package holds and what it leaves out.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Plan {
    pub fields: Vec<Field>,
    pub skipped: Vec<Skipped>,
}

/// The Metadata API object holding `object`'s custom fields.
fn metadata_object(object: &str) -> String {
    if object.eq_ignore_ascii_case("Task") || object.eq_ignore_ascii_case("Event") {
        "Activity".to_owned()
    } else {
        object.to_owned()
    }
}

/// The type a requirement asks for, or why the package cannot make the field.
fn kind_of(r: &Requirement) -> Result<Kind, &'static str> {
    Ok(match &r.expect {
        Expect::Number => NUMBER,
        Expect::Date => Kind::DateTime,
        Expect::Boolean => Kind::Checkbox,
        // A lookup's target (User, Group, a queue) is the org's design, not the config's.
        Expect::Reference => return Err("lookups (their target is the org's choice: create them by hand)"),
        // An NPS verbatim has no length limit, and Text stops at 255.
        Expect::Text if r.key.ends_with(".comment_field") => LONG_TEXT,
        // A fixed value (a picklist's in a standard field) fits free text; a custom picklist's
        // values are the admin's to choose.
        Expect::Text | Expect::Any | Expect::Value(_) => TEXT,
    })
}

/// A label from the API name: `Pendo_Active_Days__c` is "Pendo Active Days" (40 characters at
/// most, Salesforce's limit).
fn label(name: &str) -> String {
    let body = name.strip_suffix("__c").unwrap_or(name);
    // A namespaced name (`ns__Field__c`) is labelled without its namespace.
    let body = body.rsplit("__").next().unwrap_or(body);
    let words = body.split('_').filter(|w| !w.is_empty()).collect::<Vec<_>>().join(" ");
    words.chars().take(40).collect::<String>().trim_end().to_owned()
}

/// The package for `workflows`' requirements, each field once (Salesforce names ignore case),
/// in the order the config first names them.
pub fn plan<'a>(workflows: impl IntoIterator<Item = (&'a str, Vec<Requirement>)>) -> Plan {
    struct Seen {
        object: String,
        sobjects: Vec<String>,
        name: String,
        uses: Vec<(Usage, Result<Kind, &'static str>)>,
    }
    let mut order: Vec<(String, String)> = Vec::new();
    let mut seen: BTreeMap<(String, String), Seen> = BTreeMap::new();
    let mut skipped: Vec<Skipped> = Vec::new();
    let skip = |skipped: &mut Vec<Skipped>, object: &str, field: &str, reason: &'static str| {
        if !skipped.iter().any(|s| s.object.eq_ignore_ascii_case(object) && s.field.eq_ignore_ascii_case(field)) {
            skipped.push(Skipped { object: object.to_owned(), field: field.to_owned(), reason });
        }
    };
    for (workflow, requirements) in workflows {
        for r in requirements {
            if r.field.contains('.') {
                skip(&mut skipped, &r.object, &r.field, "relationship paths (the org's own lookups)");
                continue;
            }
            if !r.field.to_ascii_lowercase().ends_with("__c") {
                skip(&mut skipped, &r.object, &r.field, "standard fields (every org has them)");
                continue;
            }
            let object = metadata_object(&r.object);
            let id = (object.to_ascii_lowercase(), r.field.to_ascii_lowercase());
            let entry = seen.entry(id.clone()).or_insert_with(|| {
                order.push(id);
                Seen { object, sobjects: Vec::new(), name: r.field.clone(), uses: Vec::new() }
            });
            if !entry.sobjects.iter().any(|o| o.eq_ignore_ascii_case(&r.object)) {
                entry.sobjects.push(r.object.clone());
            }
            let kind = kind_of(&r);
            entry.uses.push((Usage { workflow: workflow.to_owned(), usage: r.usage, key: r.key }, kind));
        }
    }
    let mut fields = Vec::new();
    for id in order {
        let Some(s) = seen.remove(&id) else { continue };
        let written = || s.uses.iter().filter(|(u, _)| u.usage != Use::Read);
        let external_id = s.uses.iter().any(|(u, _)| u.usage == Use::Key);
        let kind = if external_id {
            Ok(TEXT)
        } else {
            // The first workflow that writes the field decides its type.
            match written().next() {
                Some((_, kind)) => *kind,
                None => Err("fields only read (the org's own data, not written by usagesync)"),
            }
        };
        match kind {
            Ok(kind) => fields.push(Field {
                label: label(&s.name),
                object: s.object,
                sobjects: s.sobjects,
                name: s.name,
                kind,
                external_id,
                uses: s.uses.into_iter().map(|(u, _)| u).collect(),
            }),
            Err(reason) => skip(&mut skipped, &s.object, &s.name, reason),
        }
    }
    Plan { fields, skipped }
}

/// Escapes text for an XML element's content or a double-quoted attribute. Characters XML 1.0
/// cannot carry at all (most control characters) become U+FFFD, so a stray byte in a config
/// makes a visible mark instead of a file no parser accepts.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\t' | '\n' | '\r' => out.push(c),
            c if c < ' ' || c == '\u{FFFE}' || c == '\u{FFFF}' => out.push('\u{FFFD}'),
            c => out.push(c),
        }
    }
    out
}

/// An indented XML document written element by element. Tag names are `&'static str`, so only
/// this code chooses them; every text goes through [`escape`].
pub struct Xml {
    out: String,
    open: Vec<&'static str>,
}

impl Xml {
    /// A document whose root element `root` is in the Metadata API's namespace.
    pub fn metadata(root: &'static str) -> Self {
        let mut out = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
        out.push_str(&format!("<{root} xmlns=\"{}\">\n", escape(METADATA_NS)));
        Xml { out, open: vec![root] }
    }

    fn indent(&mut self) {
        for _ in 0..self.open.len() {
            self.out.push_str("    ");
        }
    }

    pub fn open(&mut self, tag: &'static str) {
        self.indent();
        self.out.push_str(&format!("<{tag}>\n"));
        self.open.push(tag);
    }

    pub fn close(&mut self) {
        if let Some(tag) = self.open.pop() {
            self.indent();
            self.out.push_str(&format!("</{tag}>\n"));
        }
    }

    /// `<tag>text</tag>`.
    pub fn text(&mut self, tag: &'static str, text: &str) {
        self.indent();
        self.out.push_str(&format!("<{tag}>{}</{tag}>\n", escape(text)));
    }

    /// The document, every element still open closed.
    pub fn finish(mut self) -> String {
        while !self.open.is_empty() {
            self.close();
        }
        self.out
    }
}

/// One `<fields>` element. Its children come in the order a retrieve writes them
/// (`fullName`, then alphabetical), which every deploy tool accepts.
fn write_field(x: &mut Xml, f: &Field) {
    let bool_text = |b: bool| if b { "true" } else { "false" };
    x.open("fields");
    x.text("fullName", &f.name);
    if f.external_id {
        // usagesync's keys are made to differ even when compared case-insensitively.
        x.text("caseSensitive", "false");
    }
    if f.kind == Kind::Checkbox {
        x.text("defaultValue", "false");
    }
    let uses: Vec<String> = f.uses.iter().map(|u| format!("{} ({})", u.key, u.usage.as_str())).collect();
    let description: String = format!("usagesync: {}", uses.join(", ")).chars().take(1000).collect();
    x.text("description", &description);
    x.text("externalId", bool_text(f.external_id));
    x.text("label", &f.label);
    match f.kind {
        Kind::Text { length } | Kind::LongTextArea { length, .. } => x.text("length", &length.to_string()),
        _ => {}
    }
    if let Kind::Number { precision, .. } = f.kind {
        x.text("precision", &precision.to_string());
    }
    if f.kind != Kind::Checkbox {
        x.text("required", "false");
    }
    if let Kind::Number { scale, .. } = f.kind {
        x.text("scale", &scale.to_string());
    }
    x.text("type", f.kind.metadata_type());
    if matches!(f.kind, Kind::Text { .. }) {
        x.text("unique", bool_text(f.external_id));
    }
    if let Kind::LongTextArea { visible_lines, .. } = f.kind {
        x.text("visibleLines", &visible_lines.to_string());
    }
    x.close();
}

/// `objects/<object>.object`: the object's new fields only (deploying it adds them and leaves the
/// object's other fields alone).
pub fn object_xml(fields: &[&Field]) -> String {
    let mut x = Xml::metadata("CustomObject");
    for f in fields {
        write_field(&mut x, f);
    }
    x.finish()
}

/// The permission set the package grants its fields through: a deployed field is visible to
/// nobody until field-level security opens it, so the package carries that too, for the admin to
/// assign to the integration user (`sf org assign permset --name Usagesync_Integration`).
pub const PERMISSION_SET: &str = "Usagesync_Integration";

/// `package.xml`: every field as a `CustomField` member, and the permission set.
pub fn package_xml(fields: &[Field], api_version: &str) -> String {
    let mut x = Xml::metadata("Package");
    x.open("types");
    let mut members: Vec<String> = fields.iter().map(Field::member).collect();
    members.sort();
    for m in &members {
        x.text("members", m);
    }
    x.text("name", "CustomField");
    x.close();
    x.open("types");
    x.text("members", PERMISSION_SET);
    x.text("name", "PermissionSet");
    x.close();
    x.text("version", api_version);
    x.finish()
}

/// `permissionsets/Usagesync_Integration.permissionset`: read and edit on every field of the
/// package (usagesync writes them all, and reads its keys back).
pub fn permission_set_xml(fields: &[Field]) -> String {
    let mut x = Xml::metadata("PermissionSet");
    x.text("description", "Read and edit access to the fields usagesync writes (made by usagesync setup salesforce).");
    let mut members: Vec<String> = fields.iter().map(Field::member).collect();
    members.sort();
    for m in &members {
        x.open("fieldPermissions");
        x.text("editable", "true");
        x.text("field", m);
        x.text("readable", "true");
        x.close();
    }
    x.text("label", "usagesync integration");
    x.finish()
}

/// The package's files, as (path relative to the output folder, content).
pub fn files(fields: &[Field], api_version: &str) -> Vec<(String, String)> {
    let mut by_object: BTreeMap<&str, Vec<&Field>> = BTreeMap::new();
    for f in fields {
        by_object.entry(f.object.as_str()).or_default().push(f);
    }
    let mut out = vec![("package.xml".to_owned(), package_xml(fields, api_version))];
    for (object, fields) in by_object {
        out.push((format!("objects/{object}.object"), object_xml(&fields)));
    }
    out.push((format!("permissionsets/{PERMISSION_SET}.permissionset"), permission_set_xml(fields)));
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    fn req(object: &str, field: &str, usage: Use, expect: Expect, key: &str) -> Requirement {
        Requirement { object: object.into(), field: field.into(), usage, expect, key: key.into() }
    }

    fn one(r: Requirement) -> Field {
        let plan = plan([("wf", vec![r])]);
        assert_eq!(plan.fields.len(), 1, "{plan:?}");
        plan.fields[0].clone()
    }

    /// The `<fields>` element of a one-field object file, without the document around it.
    fn field_xml(f: &Field) -> String {
        let doc = object_xml(&[f]);
        let start = doc.find("    <fields>").unwrap();
        let end = doc.find("</fields>").unwrap() + "</fields>\n".len();
        doc[start..end].to_owned()
    }

    #[test]
    fn a_number_field_has_precision_and_scale() {
        let f = one(req("Account", "Pendo_Events__c", Use::Update, Expect::Number, "workflows.wf.fields.events"));
        assert_eq!(
            field_xml(&f),
            "    <fields>
        <fullName>Pendo_Events__c</fullName>
        <description>usagesync: workflows.wf.fields.events (update)</description>
        <externalId>false</externalId>
        <label>Pendo Events</label>
        <precision>18</precision>
        <required>false</required>
        <scale>2</scale>
        <type>Number</type>
    </fields>
"
        );
    }

    #[test]
    fn a_date_is_a_date_time_because_usagesync_writes_instants() {
        let f = one(req("Contact", "NPS_Date__c", Use::Update, Expect::Date, "workflows.wf.contact.date_field"));
        let xml = field_xml(&f);
        assert!(xml.contains("<type>DateTime</type>"), "{xml}");
        assert!(!xml.contains("<length>") && !xml.contains("<precision>") && !xml.contains("<unique>"), "{xml}");
    }

    #[test]
    fn a_text_field_has_a_length_and_is_not_unique() {
        let f = one(req("Opportunity", "Trial_Drop_Off_Step__c", Use::Update, Expect::Text, "workflows.wf.x"));
        let xml = field_xml(&f);
        for part in ["<length>255</length>", "<type>Text</type>", "<unique>false</unique>", "<externalId>false"] {
            assert!(xml.contains(part), "{part} in {xml}");
        }
        assert!(!xml.contains("caseSensitive"), "{xml}");
    }

    #[test]
    fn a_key_is_an_external_id_unique_case_insensitive_text_field_on_activity_for_tasks() {
        let f = one(req("Task", "Usagesync_Key__c", Use::Key, Expect::Text, "workflows.wf.alert.key_field"));
        assert_eq!(f.member(), "Activity.Usagesync_Key__c");
        assert_eq!(
            field_xml(&f),
            "    <fields>
        <fullName>Usagesync_Key__c</fullName>
        <caseSensitive>false</caseSensitive>
        <description>usagesync: workflows.wf.alert.key_field (external-ID key)</description>
        <externalId>true</externalId>
        <label>Usagesync Key</label>
        <length>255</length>
        <required>false</required>
        <type>Text</type>
        <unique>true</unique>
    </fields>
"
        );
    }

    #[test]
    fn an_nps_verbatim_is_long_text_and_a_checkbox_defaults_to_false() {
        let f = one(req("Contact", "NPS_Comment__c", Use::Update, Expect::Text, "workflows.nps.contact.comment_field"));
        let xml = field_xml(&f);
        for part in ["<length>32768</length>", "<type>LongTextArea</type>", "<visibleLines>3</visibleLines>"] {
            assert!(xml.contains(part), "{part} in {xml}");
        }
        let f = one(req("Account", "Is_Active__c", Use::Update, Expect::Boolean, "workflows.wf.x"));
        let xml = field_xml(&f);
        assert!(xml.contains("<defaultValue>false</defaultValue>") && xml.contains("<type>Checkbox</type>"), "{xml}");
        assert!(!xml.contains("<required>"), "a checkbox is never required: {xml}");
    }

    #[test]
    fn each_field_once_keys_win_and_standard_read_and_lookup_fields_are_left_out_with_a_reason() {
        let plan = plan([
            (
                "a",
                vec![
                    req("Task", "Usagesync_Key__c", Use::Key, Expect::Text, "k1"),
                    req("Account", "CSM__c", Use::Read, Expect::Reference, "k2"),
                    req("Opportunity", "StageName", Use::Create, Expect::Value("Prospecting".into()), "k3"),
                    req("Account", "CSM__r.Name", Use::Read, Expect::Text, "k4"),
                    req("Account", "Owner_Lookup__c", Use::Update, Expect::Reference, "k5"),
                ],
            ),
            (
                "b",
                vec![
                    req("Event", "usagesync_key__c", Use::Create, Expect::Text, "k6"),
                    req("Account", "Pendo_Account_Id__c", Use::Read, Expect::Text, "k7"),
                    req("Account", "Pendo_Account_Id__c", Use::Key, Expect::Text, "k8"),
                ],
            ),
        ]);
        let members: Vec<String> = plan.fields.iter().map(Field::member).collect();
        assert_eq!(members, ["Activity.Usagesync_Key__c", "Account.Pendo_Account_Id__c"]);
        assert_eq!(plan.fields[0].sobjects, ["Task", "Event"]);
        assert_eq!(plan.fields[0].uses.len(), 2);
        assert!(plan.fields[1].external_id, "a key in one workflow makes it an External ID for all");
        let skipped: Vec<String> = plan.skipped.iter().map(|s| format!("{}.{}", s.object, s.field)).collect();
        assert_eq!(
            skipped,
            ["Opportunity.StageName", "Account.CSM__r.Name", "Account.CSM__c", "Account.Owner_Lookup__c"]
        );
    }

    #[test]
    fn names_and_texts_are_escaped_and_the_package_lists_every_member() {
        assert_eq!(escape("a<b>&\"c'\u{1}"), "a&lt;b&gt;&amp;&quot;c&apos;\u{FFFD}");
        let mut x = Xml::metadata("Package");
        x.text("members", "Account.X__c</members><members>*");
        let doc = x.finish();
        assert!(doc.contains("<members>Account.X__c&lt;/members&gt;&lt;members&gt;*</members>"), "{doc}");
        assert!(doc.ends_with("</Package>\n"), "{doc}");

        let plan = plan([(
            "wf",
            vec![
                req("Contact", "B__c", Use::Update, Expect::Number, "k"),
                req("Account", "A__c", Use::Update, Expect::Date, "k"),
            ],
        )]);
        let files = files(&plan.fields, "62.0");
        let names: Vec<&str> = files.iter().map(|(p, _)| p.as_str()).collect();
        assert_eq!(
            names,
            [
                "package.xml",
                "objects/Account.object",
                "objects/Contact.object",
                "permissionsets/Usagesync_Integration.permissionset"
            ]
        );
        assert_eq!(
            files[0].1,
            format!(
                "<?xml version=\"1.0\" encoding=\"UTF-8\"?>
<Package xmlns=\"{METADATA_NS}\">
    <types>
        <members>Account.A__c</members>
        <members>Contact.B__c</members>
        <name>CustomField</name>
    </types>
    <types>
        <members>Usagesync_Integration</members>
        <name>PermissionSet</name>
    </types>
    <version>62.0</version>
</Package>
"
            )
        );
        // Read and edit on each field of the package, and nothing else.
        assert_eq!(
            files[3].1,
            format!(
                "<?xml version=\"1.0\" encoding=\"UTF-8\"?>
<PermissionSet xmlns=\"{METADATA_NS}\">
    <description>Read and edit access to the fields usagesync writes (made by usagesync setup salesforce).</description>
    <fieldPermissions>
        <editable>true</editable>
        <field>Account.A__c</field>
        <readable>true</readable>
    </fieldPermissions>
    <fieldPermissions>
        <editable>true</editable>
        <field>Contact.B__c</field>
        <readable>true</readable>
    </fieldPermissions>
    <label>usagesync integration</label>
</PermissionSet>
"
            )
        );
    }

    #[test]
    fn labels_come_from_the_api_name() {
        assert_eq!(label("Pendo_Active_Days__c"), "Pendo Active Days");
        assert_eq!(label("ns__Health_Score__c"), "Health Score");
        // Cut to Salesforce's 40 characters, never ending in a space.
        assert_eq!(label(&format!("{}__c", "A_".repeat(30))).chars().count(), 39);
    }
}
