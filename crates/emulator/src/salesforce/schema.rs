//! The org's metadata: which sObjects exist, their fields, types, lengths, picklists, required
//! and unique flags, and relationships. Describe responses, write validation and SOQL all read
//! from here, so an admin-added custom field behaves like a built-in one everywhere.

use std::sync::Arc;

use indexmap::IndexMap;
use serde::Deserialize;
use serde_json::{Value, json};

/// A field's data type, named as describe names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FieldType {
    Id,
    String,
    TextArea,
    Email,
    Phone,
    Url,
    Picklist,
    Boolean,
    Int,
    Double,
    Currency,
    Percent,
    Date,
    DateTime,
    Reference,
}

impl FieldType {
    pub fn describe_name(self) -> &'static str {
        match self {
            FieldType::Id => "id",
            FieldType::String => "string",
            FieldType::TextArea => "textarea",
            FieldType::Email => "email",
            FieldType::Phone => "phone",
            FieldType::Url => "url",
            FieldType::Picklist => "picklist",
            FieldType::Boolean => "boolean",
            FieldType::Int => "int",
            FieldType::Double => "double",
            FieldType::Currency => "currency",
            FieldType::Percent => "percent",
            FieldType::Date => "date",
            FieldType::DateTime => "datetime",
            FieldType::Reference => "reference",
        }
    }

    fn soap_type(self) -> &'static str {
        match self {
            FieldType::Id | FieldType::Reference => "tns:ID",
            FieldType::Boolean => "xsd:boolean",
            FieldType::Int => "xsd:int",
            FieldType::Double | FieldType::Currency | FieldType::Percent => "xsd:double",
            FieldType::Date => "xsd:date",
            FieldType::DateTime => "xsd:dateTime",
            _ => "xsd:string",
        }
    }

    /// Whether values are text (and so subject to a length limit and LIKE).
    pub fn is_text(self) -> bool {
        matches!(
            self,
            FieldType::String
                | FieldType::TextArea
                | FieldType::Email
                | FieldType::Phone
                | FieldType::Url
                | FieldType::Picklist
        )
    }

    pub fn is_numeric(self) -> bool {
        matches!(self, FieldType::Int | FieldType::Double | FieldType::Currency | FieldType::Percent)
    }
}

/// One field of an sObject.
#[derive(Debug, Clone)]
pub struct FieldDef {
    /// The API name in its canonical case (`Pendo_Account_Id__c`); lookups ignore case.
    pub name: String,
    pub label: String,
    pub field_type: FieldType,
    /// Maximum length for text types, 0 otherwise.
    pub length: u32,
    pub precision: u32,
    pub scale: u32,
    /// `nillable = false` and not defaulted: a create without it answers REQUIRED_FIELD_MISSING.
    pub required: bool,
    /// Set on create when the request leaves the field out (picklist defaults, running user).
    pub default: Option<Value>,
    pub createable: bool,
    pub updateable: bool,
    pub external_id: bool,
    pub unique: bool,
    pub case_sensitive: bool,
    pub picklist: Vec<String>,
    /// A restricted picklist rejects values outside its list with INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST.
    pub restricted: bool,
    pub reference_to: Vec<String>,
    pub relationship_name: Option<String>,
    /// The name the referenced objects use for this lookup's children (`Contacts` for
    /// `Contact.AccountId`): the FROM of a parent-to-child subquery and `childRelationships`.
    pub child_relationship_name: Option<String>,
    pub custom: bool,
    /// System-maintained (Id, CreatedDate, SystemModstamp, ...): never writable by the API.
    pub system: bool,
}

impl FieldDef {
    pub fn new(name: &str, field_type: FieldType) -> Self {
        let length = match field_type {
            FieldType::Id | FieldType::Reference => 18,
            FieldType::TextArea => 32000,
            FieldType::Email | FieldType::String | FieldType::Url | FieldType::Picklist => 255,
            FieldType::Phone => 40,
            _ => 0,
        };
        let (precision, scale) = match field_type {
            FieldType::Int => (9, 0),
            FieldType::Double | FieldType::Percent => (18, 2),
            FieldType::Currency => (18, 2),
            _ => (0, 0),
        };
        FieldDef {
            name: name.to_string(),
            label: label_for(name),
            field_type,
            length,
            precision,
            scale,
            required: false,
            default: None,
            createable: true,
            updateable: true,
            external_id: false,
            unique: false,
            case_sensitive: false,
            picklist: Vec::new(),
            restricted: false,
            reference_to: Vec::new(),
            relationship_name: None,
            child_relationship_name: None,
            custom: name.ends_with("__c"),
            system: false,
        }
    }

    fn len(mut self, length: u32) -> Self {
        self.length = length;
        self
    }
    fn required(mut self) -> Self {
        self.required = true;
        self
    }
    fn default(mut self, v: Value) -> Self {
        self.default = Some(v);
        self
    }
    fn external_unique(mut self) -> Self {
        self.external_id = true;
        self.unique = true;
        self
    }
    fn picklist(mut self, values: &[&str]) -> Self {
        self.picklist = values.iter().map(|s| s.to_string()).collect();
        self
    }
    fn restricted(mut self) -> Self {
        self.restricted = true;
        self
    }
    fn reference(mut self, to: &[&str], relationship: &str) -> Self {
        self.reference_to = to.iter().map(|s| s.to_string()).collect();
        self.relationship_name = Some(relationship.to_string());
        self
    }
    fn children(mut self, name: &str) -> Self {
        self.child_relationship_name = Some(name.to_string());
        self
    }
    fn system(mut self) -> Self {
        self.system = true;
        self.createable = false;
        self.updateable = false;
        self
    }
    fn create_only(mut self) -> Self {
        self.updateable = false;
        self
    }

    /// Whether the field can be absent (null) on a saved record.
    pub fn nillable(&self) -> bool {
        !self.required && self.default.is_none() && self.field_type != FieldType::Boolean && !self.system
    }

    pub fn describe(&self) -> Value {
        let picklist: Vec<Value> = self
            .picklist
            .iter()
            .enumerate()
            .map(|(i, v)| {
                json!({"active": true, "defaultValue": i == 0 && self.default.is_some(),
                       "label": v, "validFor": null, "value": v})
            })
            .collect();
        json!({
            "aggregatable": self.field_type != FieldType::TextArea,
            "autoNumber": false,
            "byteLength": if self.field_type.is_text() || matches!(self.field_type, FieldType::Id | FieldType::Reference) { self.length * 3 } else { 0 },
            "calculated": false,
            "caseSensitive": self.case_sensitive,
            "createable": self.createable,
            "custom": self.custom,
            "defaultValue": null,
            "defaultedOnCreate": self.default.is_some() || self.system,
            "digits": if self.field_type == FieldType::Int { self.precision } else { 0 },
            "externalId": self.external_id,
            "filterable": self.field_type != FieldType::TextArea,
            "groupable": !matches!(self.field_type, FieldType::TextArea | FieldType::Double | FieldType::Currency | FieldType::Percent | FieldType::DateTime),
            "idLookup": self.field_type == FieldType::Id || self.external_id,
            "label": self.label,
            "length": if self.field_type.is_text() || matches!(self.field_type, FieldType::Id | FieldType::Reference) { self.length } else { 0 },
            "name": self.name,
            "nameField": self.name == "Name",
            "nillable": self.nillable(),
            "picklistValues": picklist,
            "polymorphicForeignKey": self.reference_to.len() > 1,
            "precision": if matches!(self.field_type, FieldType::Double | FieldType::Currency | FieldType::Percent) { self.precision } else { 0 },
            "referenceTo": self.reference_to,
            "relationshipName": self.relationship_name,
            "restrictedPicklist": self.restricted,
            "scale": self.scale,
            "soapType": self.field_type.soap_type(),
            "sortable": self.field_type != FieldType::TextArea,
            "type": self.field_type.describe_name(),
            "unique": self.unique,
            "updateable": self.updateable,
        })
    }
}

fn label_for(name: &str) -> String {
    let base = name.strip_suffix("__c").unwrap_or(name);
    let base = base.strip_suffix("Id").filter(|b| !b.is_empty()).unwrap_or(base);
    base.replace('_', " ")
}

/// One sObject type.
#[derive(Debug, Clone)]
pub struct ObjectDef {
    pub name: String,
    pub label: String,
    pub label_plural: String,
    pub key_prefix: String,
    pub custom: bool,
    /// Keyed by lower-cased API name because Salesforce resolves field names case-insensitively.
    fields: IndexMap<String, FieldDef>,
    /// Canonical name → position in `fields`: most callers spell names canonically, and this
    /// spares them lower-casing (an allocation) on every lookup of a hot write path.
    exact: std::collections::HashMap<String, usize>,
    /// Lower-cased relationship name → lower-cased field name.
    relationships: IndexMap<String, String>,
    /// Whether the API may create records of this type (User is read-only here).
    pub createable: bool,
    /// Whether the API may neither update nor delete records of this type (Organization).
    pub read_only: bool,
}

impl ObjectDef {
    fn new(name: &str, plural: &str, key_prefix: &str) -> Self {
        let mut obj = ObjectDef {
            name: name.to_string(),
            label: name.to_string(),
            label_plural: plural.to_string(),
            key_prefix: key_prefix.to_string(),
            custom: name.ends_with("__c"),
            fields: IndexMap::new(),
            exact: std::collections::HashMap::new(),
            relationships: IndexMap::new(),
            createable: true,
            read_only: false,
        };
        for f in [
            FieldDef::new("Id", FieldType::Id).system(),
            FieldDef::new("IsDeleted", FieldType::Boolean).system(),
            FieldDef::new("CreatedDate", FieldType::DateTime).system(),
            FieldDef::new("CreatedById", FieldType::Reference).reference(&["User"], "CreatedBy").system(),
            FieldDef::new("LastModifiedDate", FieldType::DateTime).system(),
            FieldDef::new("LastModifiedById", FieldType::Reference).reference(&["User"], "LastModifiedBy").system(),
            FieldDef::new("SystemModstamp", FieldType::DateTime).system(),
        ] {
            obj.add_field(f);
        }
        obj
    }

    /// Adds or replaces a field (admins may redefine a custom field's length or flags).
    pub fn add_field(&mut self, field: FieldDef) {
        if let Some(rel) = &field.relationship_name {
            self.relationships.insert(rel.to_ascii_lowercase(), field.name.to_ascii_lowercase());
        }
        let (index, old) = self.fields.insert_full(field.name.to_ascii_lowercase(), field.clone());
        if let Some(old) = old {
            self.exact.remove(&old.name);
        }
        self.exact.insert(field.name, index);
    }

    pub fn field(&self, name: &str) -> Option<&FieldDef> {
        if let Some(i) = self.exact.get(name) {
            return self.fields.get_index(*i).map(|(_, f)| f);
        }
        self.fields.get(&name.to_ascii_lowercase())
    }

    /// The lookup field behind a relationship name (`Owner` → `OwnerId`).
    pub fn relationship(&self, name: &str) -> Option<&FieldDef> {
        let field = self.relationships.get(&name.to_ascii_lowercase())?;
        self.fields.get(field)
    }

    pub fn fields(&self) -> impl Iterator<Item = &FieldDef> {
        self.fields.values()
    }

    pub fn url(&self, version: &str) -> String {
        format!("/services/data/v{version}/sobjects/{}", self.name)
    }

    /// The entry for this object in the global describe.
    pub fn describe_global_entry(&self, version: &str) -> Value {
        let base = self.url(version);
        json!({
            "activateable": false, "createable": self.createable, "custom": self.custom,
            "customSetting": false, "deletable": self.createable && !self.read_only, "deprecatedAndHidden": false,
            "feedEnabled": false, "keyPrefix": self.key_prefix, "label": self.label,
            "labelPlural": self.label_plural, "layoutable": true, "mergeable": false,
            "mruEnabled": true, "name": self.name, "queryable": true, "replicateable": true,
            "retrieveable": true, "searchable": true, "triggerable": true, "undeletable": true,
            "updateable": !self.read_only,
            "urls": {"sobject": base, "describe": format!("{base}/describe"),
                     "rowTemplate": format!("{base}/{{ID}}")},
        })
    }

    /// The object's full describe; `schema` supplies the lookups of other objects that point here.
    pub fn describe(&self, version: &str, schema: &Schema) -> Value {
        let mut v = self.describe_global_entry(version);
        if let Some(map) = v.as_object_mut() {
            map.insert("fields".into(), Value::Array(self.fields().map(FieldDef::describe).collect()));
            let children: Vec<Value> = schema
                .child_relationships(&self.name)
                .iter()
                .map(|c| {
                    json!({"cascadeDelete": false, "childSObject": c.child, "deprecatedAndHidden": false,
                           "field": c.field, "junctionIdListNames": [], "junctionReferenceTo": [],
                           "relationshipName": c.name, "restrictedDelete": false})
                })
                .collect();
            map.insert("childRelationships".into(), Value::Array(children));
            map.insert("recordTypeInfos".into(), json!([]));
        }
        v
    }
}

/// A parent-to-child relationship: `child` records whose `field` holds the parent's Id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChildRel {
    pub child: String,
    pub field: String,
    pub name: String,
}

/// Every object of the org, keyed by lower-cased name. Objects sit behind `Arc` so a write can
/// hold its object's definition while it mutates the data, without copying the definition.
#[derive(Debug, Clone)]
pub struct Schema {
    objects: IndexMap<String, Arc<ObjectDef>>,
}

impl Schema {
    pub fn object(&self, name: &str) -> Option<&Arc<ObjectDef>> {
        self.objects.get(&name.to_ascii_lowercase())
    }

    pub fn object_mut(&mut self, name: &str) -> Option<&mut ObjectDef> {
        self.objects.get_mut(&name.to_ascii_lowercase()).map(Arc::make_mut)
    }

    pub fn objects(&self) -> impl Iterator<Item = &ObjectDef> {
        self.objects.values().map(|o| &**o)
    }

    /// The object an ID belongs to, by its key prefix.
    pub fn object_for_id(&self, id: &str) -> Option<&Arc<ObjectDef>> {
        let prefix = super::ids::key_prefix(id);
        self.objects.values().find(|o| o.key_prefix == prefix)
    }

    /// Every lookup of any object that points at `parent` and names its children, in schema order.
    pub fn child_relationships(&self, parent: &str) -> Vec<ChildRel> {
        let mut out = Vec::new();
        for o in self.objects() {
            for f in o.fields() {
                let Some(name) = &f.child_relationship_name else { continue };
                if f.reference_to.iter().any(|t| t.eq_ignore_ascii_case(parent)) {
                    out.push(ChildRel { child: o.name.clone(), field: f.name.clone(), name: name.clone() });
                }
            }
        }
        out
    }

    /// The child relationship of `parent` called `name` (case-insensitive).
    pub fn child_relationship(&self, parent: &str, name: &str) -> Option<ChildRel> {
        self.child_relationships(parent).into_iter().find(|c| c.name.eq_ignore_ascii_case(name))
    }

    fn insert(&mut self, obj: ObjectDef) {
        self.objects.insert(obj.name.to_ascii_lowercase(), Arc::new(obj));
    }

    /// The standard objects usagesync works with, plus the custom fields its templates need.
    pub fn standard() -> Self {
        let mut s = Schema { objects: IndexMap::new() };
        let owner = || FieldDef::new("OwnerId", FieldType::Reference).reference(&["User"], "Owner");

        let mut user = ObjectDef::new("User", "Users", "005");
        user.createable = false;
        for f in [
            FieldDef::new("Username", FieldType::String).len(80).required(),
            FieldDef::new("Email", FieldType::Email).len(128).required(),
            FieldDef::new("FirstName", FieldType::String).len(40),
            FieldDef::new("LastName", FieldType::String).len(80).required(),
            FieldDef::new("Name", FieldType::String).len(121).create_only(),
            FieldDef::new("Alias", FieldType::String).len(8),
            FieldDef::new("IsActive", FieldType::Boolean).default(json!(true)),
            FieldDef::new("Title", FieldType::String).len(80),
            FieldDef::new("TimeZoneSidKey", FieldType::Picklist).len(40),
        ] {
            user.add_field(f);
        }
        s.insert(user);

        let mut account = ObjectDef::new("Account", "Accounts", "001");
        for f in [
            FieldDef::new("Name", FieldType::String).required(),
            FieldDef::new("Website", FieldType::Url),
            FieldDef::new("Type", FieldType::Picklist).len(40).picklist(&[
                "Prospect",
                "Customer - Direct",
                "Customer - Channel",
                "Channel Partner / Reseller",
                "Installation Partner",
                "Technology Partner",
                "Other",
            ]),
            FieldDef::new("Industry", FieldType::Picklist).len(40).picklist(&[
                "Agriculture",
                "Apparel",
                "Banking",
                "Biotechnology",
                "Communications",
                "Consulting",
                "Education",
                "Electronics",
                "Energy",
                "Engineering",
                "Finance",
                "Healthcare",
                "Hospitality",
                "Insurance",
                "Manufacturing",
                "Media",
                "Retail",
                "Technology",
                "Telecommunications",
                "Transportation",
                "Utilities",
                "Other",
            ]),
            FieldDef::new("Phone", FieldType::Phone),
            FieldDef::new("AccountNumber", FieldType::String).len(40),
            FieldDef::new("NumberOfEmployees", FieldType::Int).len(8),
            FieldDef::new("AnnualRevenue", FieldType::Currency),
            FieldDef::new("Description", FieldType::TextArea),
            FieldDef::new("BillingCity", FieldType::String).len(40),
            FieldDef::new("BillingCountry", FieldType::String).len(80),
            FieldDef::new("ParentId", FieldType::Reference).reference(&["Account"], "Parent").children("ChildAccounts"),
            owner(),
            // usagesync's template fields, preinstalled as a managed package would.
            FieldDef::new("Pendo_Account_Id__c", FieldType::String).external_unique(),
            FieldDef::new("Pendo_Active_Visitors__c", FieldType::Double),
            FieldDef::new("Pendo_Active_Days__c", FieldType::Double),
            FieldDef::new("Pendo_Events__c", FieldType::Double),
            FieldDef::new("Pendo_Minutes__c", FieldType::Double),
            FieldDef::new("Pendo_Feature_Adoption__c", FieldType::Percent),
            FieldDef::new("Pendo_Guide_Completion__c", FieldType::Percent),
            FieldDef::new("Pendo_Last_Active__c", FieldType::DateTime),
            FieldDef::new("Pendo_Engagement_Score__c", FieldType::Double),
            FieldDef::new("Pendo_Engagement_Updated__c", FieldType::DateTime),
            FieldDef::new("Health_Score__c", FieldType::Double),
            FieldDef::new("Plan_Tier__c", FieldType::Picklist).picklist(&["Free", "Starter", "Growth", "Enterprise"]),
            FieldDef::new("Renewal_Date__c", FieldType::Date),
            FieldDef::new("Contract_Stage__c", FieldType::Picklist).picklist(&[
                "Trial",
                "Active",
                "Renewal Pending",
                "Churned",
            ]),
            FieldDef::new("Contracted_Seats__c", FieldType::Double),
            FieldDef::new("CSM__c", FieldType::Reference).reference(&["User"], "CSM__r"),
        ] {
            account.add_field(f);
        }
        s.insert(account);

        let mut contact = ObjectDef::new("Contact", "Contacts", "003");
        for f in [
            FieldDef::new("FirstName", FieldType::String).len(40),
            FieldDef::new("LastName", FieldType::String).len(80).required(),
            FieldDef::new("Name", FieldType::String).len(121).system(),
            FieldDef::new("Email", FieldType::Email).len(80),
            FieldDef::new("Phone", FieldType::Phone),
            FieldDef::new("Title", FieldType::String).len(128),
            FieldDef::new("AccountId", FieldType::Reference).reference(&["Account"], "Account").children("Contacts"),
            owner(),
            FieldDef::new("Pendo_Visitor_Id__c", FieldType::String).external_unique(),
            FieldDef::new("Pendo_Last_Active__c", FieldType::DateTime),
            FieldDef::new("NPS_Score__c", FieldType::Double),
            FieldDef::new("NPS_Comment__c", FieldType::TextArea).len(32768),
            FieldDef::new("NPS_Date__c", FieldType::DateTime),
        ] {
            contact.add_field(f);
        }
        s.insert(contact);

        let mut lead = ObjectDef::new("Lead", "Leads", "00Q");
        for f in [
            FieldDef::new("FirstName", FieldType::String).len(40),
            FieldDef::new("LastName", FieldType::String).len(80).required(),
            FieldDef::new("Name", FieldType::String).len(121).system(),
            FieldDef::new("Company", FieldType::String).required(),
            FieldDef::new("Email", FieldType::Email).len(80),
            FieldDef::new("Status", FieldType::Picklist)
                .len(40)
                .picklist(&[
                    "Open - Not Contacted",
                    "Working - Contacted",
                    "Closed - Converted",
                    "Closed - Not Converted",
                ])
                .default(json!("Open - Not Contacted")),
            FieldDef::new("LeadSource", FieldType::Picklist).len(40).picklist(&[
                "Web",
                "Phone Inquiry",
                "Partner Referral",
                "Product",
                "Other",
            ]),
            owner(),
            FieldDef::new("Pendo_Visitor_Id__c", FieldType::String).external_unique(),
        ] {
            lead.add_field(f);
        }
        s.insert(lead);

        let usagesync_key = || FieldDef::new("Usagesync_Key__c", FieldType::String).external_unique();

        let mut task = ObjectDef::new("Task", "Tasks", "00T");
        for f in [
            FieldDef::new("Subject", FieldType::String),
            FieldDef::new("Description", FieldType::TextArea),
            FieldDef::new("Status", FieldType::Picklist)
                .len(40)
                .picklist(&["Not Started", "In Progress", "Completed", "Waiting on someone else", "Deferred"])
                .restricted()
                .default(json!("Not Started")),
            FieldDef::new("Priority", FieldType::Picklist)
                .len(40)
                .picklist(&["High", "Normal", "Low"])
                .restricted()
                .default(json!("Normal")),
            FieldDef::new("ActivityDate", FieldType::Date),
            FieldDef::new("WhatId", FieldType::Reference)
                .reference(&["Account", "Opportunity", "Case"], "What")
                .children("Tasks"),
            FieldDef::new("WhoId", FieldType::Reference).reference(&["Contact", "Lead"], "Who").children("Tasks"),
            FieldDef::new("TaskSubtype", FieldType::Picklist).len(40).picklist(&["Task", "Email", "Call"]),
            owner(),
            usagesync_key(),
        ] {
            task.add_field(f);
        }
        s.insert(task);

        let mut case = ObjectDef::new("Case", "Cases", "500");
        for f in [
            FieldDef::new("CaseNumber", FieldType::String).len(30).system(),
            FieldDef::new("Subject", FieldType::String),
            FieldDef::new("Description", FieldType::TextArea),
            FieldDef::new("Status", FieldType::Picklist)
                .len(40)
                .picklist(&["New", "Working", "Escalated", "Closed"])
                .restricted()
                .default(json!("New")),
            FieldDef::new("Priority", FieldType::Picklist)
                .len(40)
                .picklist(&["High", "Medium", "Low"])
                .default(json!("Medium")),
            FieldDef::new("Origin", FieldType::Picklist).len(40).picklist(&["Phone", "Email", "Web"]),
            FieldDef::new("Type", FieldType::Picklist).len(40).picklist(&["Question", "Problem", "Feature Request"]),
            FieldDef::new("Reason", FieldType::Picklist).len(40).picklist(&[
                "User didn't attend training",
                "Complex functionality",
                "Existing problem",
                "Instructions not clear",
                "New problem",
            ]),
            FieldDef::new("AccountId", FieldType::Reference).reference(&["Account"], "Account").children("Cases"),
            FieldDef::new("ContactId", FieldType::Reference).reference(&["Contact"], "Contact").children("Cases"),
            owner(),
            usagesync_key(),
        ] {
            case.add_field(f);
        }
        s.insert(case);

        let mut opp = ObjectDef::new("Opportunity", "Opportunities", "006");
        for f in [
            FieldDef::new("Name", FieldType::String).len(120).required(),
            FieldDef::new("StageName", FieldType::Picklist).len(255).required().restricted().picklist(&[
                "Prospecting",
                "Qualification",
                "Needs Analysis",
                "Value Proposition",
                "Id. Decision Makers",
                "Perception Analysis",
                "Proposal/Price Quote",
                "Negotiation/Review",
                "Closed Won",
                "Closed Lost",
            ]),
            FieldDef::new("CloseDate", FieldType::Date).required(),
            FieldDef::new("Amount", FieldType::Currency),
            FieldDef::new("Probability", FieldType::Percent),
            FieldDef::new("Type", FieldType::Picklist).len(255).picklist(&[
                "Existing Customer - Upgrade",
                "Existing Customer - Replacement",
                "Existing Customer - Downgrade",
                "New Customer",
                "Trial",
            ]),
            FieldDef::new("LeadSource", FieldType::Picklist).len(40).picklist(&[
                "Web",
                "Phone Inquiry",
                "Partner Referral",
                "Product",
                "Other",
            ]),
            FieldDef::new("Description", FieldType::TextArea),
            FieldDef::new("IsClosed", FieldType::Boolean).system(),
            FieldDef::new("IsWon", FieldType::Boolean).system(),
            FieldDef::new("AccountId", FieldType::Reference)
                .reference(&["Account"], "Account")
                .children("Opportunities"),
            owner(),
            usagesync_key(),
            FieldDef::new("Is_POC__c", FieldType::Boolean).default(json!(false)),
            FieldDef::new("Trial_Active_Users__c", FieldType::Double),
            FieldDef::new("Trial_Features_Explored__c", FieldType::Double),
            FieldDef::new("Trial_Guides_Completed__c", FieldType::Double),
            FieldDef::new("Trial_Last_Active__c", FieldType::DateTime),
            FieldDef::new("Trial_Drop_Off_Step__c", FieldType::String),
            FieldDef::new("Expansion_Milestone__c", FieldType::String),
        ] {
            opp.add_field(f);
        }
        s.insert(opp);

        // Read by every Salesforce CLI command (name, instance, sandbox flag); one record.
        let mut org = ObjectDef::new("Organization", "Organizations", "00D");
        org.createable = false;
        org.read_only = true;
        for f in [
            FieldDef::new("Name", FieldType::String).len(80).system(),
            FieldDef::new("InstanceName", FieldType::String).len(5).system(),
            FieldDef::new("IsSandbox", FieldType::Boolean).system(),
            FieldDef::new("TrialExpirationDate", FieldType::DateTime).system(),
            FieldDef::new("NamespacePrefix", FieldType::String).len(15).system(),
            FieldDef::new("OrganizationType", FieldType::Picklist).len(40).system(),
            FieldDef::new("Country", FieldType::String).len(80).system(),
            FieldDef::new("LanguageLocaleKey", FieldType::Picklist).len(40).system(),
            FieldDef::new("DefaultLocaleSidKey", FieldType::Picklist).len(40).system(),
            FieldDef::new("TimeZoneSidKey", FieldType::Picklist).len(40).system(),
        ] {
            org.add_field(f);
        }
        s.insert(org);
        s
    }

    /// Adds a custom field defined through the admin API.
    ///
    /// # Errors
    /// A message naming the problem when the object is unknown, the name is not a custom field
    /// name (`Something__c`), or it would redefine a standard field.
    pub fn add_custom_field(&mut self, object: &str, spec: CustomFieldSpec) -> Result<(), String> {
        let obj = self.object_mut(object).ok_or_else(|| format!("sObject type '{object}' is not supported."))?;
        let valid_name = spec.name.ends_with("__c")
            && spec.name.len() > 3
            && spec.name.len() <= 43
            && spec.name.starts_with(|c: char| c.is_ascii_alphabetic())
            && spec.name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
            && !spec.name[..spec.name.len() - 3].contains("__");
        if !valid_name {
            return Err(format!(
                "invalid custom field name '{}': it must start with a letter, use letters, digits and single underscores, and end in __c",
                spec.name
            ));
        }
        if spec.field_type == FieldType::Id {
            return Err("custom fields cannot be of type id".into());
        }
        if spec.field_type == FieldType::Reference && spec.reference_to.is_empty() {
            return Err(format!("reference field '{}' needs referenceTo", spec.name));
        }
        let mut f = FieldDef::new(&spec.name, spec.field_type);
        if let Some(l) = spec.length {
            if l == 0 || l > 131_072 {
                return Err(format!("length {l} is out of range 1..131072"));
            }
            f.length = l;
        }
        if let Some(label) = spec.label {
            f.label = label;
        }
        f.required = spec.required;
        f.external_id = spec.external_id;
        f.unique = spec.unique;
        f.case_sensitive = spec.case_sensitive;
        f.picklist = spec.picklist_values;
        f.restricted = spec.restricted_picklist;
        if spec.field_type == FieldType::Reference {
            let rel = spec.name.trim_end_matches("__c").to_string() + "__r";
            f.reference_to = spec.reference_to;
            f.relationship_name = Some(rel);
            // Salesforce asks for a child relationship name when a lookup is made; the plural
            // of the field's base name, as `__r`, is what its wizard proposes.
            f.child_relationship_name = Some(spec.name.trim_end_matches("__c").to_string() + "s__r");
        }
        if let Some(d) = spec.default_value {
            f.default = Some(d);
        }
        obj.add_field(f);
        Ok(())
    }
}

/// The admin API's description of a custom field to add (`POST /__emulator/fields/{sobject}`).
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CustomFieldSpec {
    pub name: String,
    #[serde(rename = "type")]
    pub field_type: FieldType,
    #[serde(default)]
    pub label: Option<String>,
    #[serde(default)]
    pub length: Option<u32>,
    #[serde(default)]
    pub required: bool,
    #[serde(default)]
    pub external_id: bool,
    #[serde(default)]
    pub unique: bool,
    #[serde(default)]
    pub case_sensitive: bool,
    #[serde(default)]
    pub picklist_values: Vec<String>,
    #[serde(default)]
    pub restricted_picklist: bool,
    #[serde(default)]
    pub reference_to: Vec<String>,
    #[serde(default)]
    pub default_value: Option<Value>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookups_ignore_case() {
        let s = Schema::standard();
        let acct = s.object("account").map(|o| o.name.clone());
        assert_eq!(acct.as_deref(), Some("Account"));
        let f = s.object("Account").and_then(|o| o.field("pendo_account_id__C")).map(|f| f.external_id);
        assert_eq!(f, Some(true));
        let owner = s.object("Contact").and_then(|o| o.relationship("owner")).map(|f| f.name.clone());
        assert_eq!(owner.as_deref(), Some("OwnerId"));
        assert_eq!(s.object_for_id("006000000000000AAA").map(|o| o.name.as_str()), Some("Opportunity"));
    }

    #[test]
    fn custom_field_names_are_checked() {
        let mut s = Schema::standard();
        let spec = |name: &str| CustomFieldSpec {
            name: name.into(),
            field_type: FieldType::String,
            label: None,
            length: Some(80),
            required: false,
            external_id: false,
            unique: false,
            case_sensitive: false,
            picklist_values: vec![],
            restricted_picklist: false,
            reference_to: vec![],
            default_value: None,
        };
        assert!(s.add_custom_field("Account", spec("Tier__c")).is_ok());
        assert!(s.add_custom_field("Account", spec("Name")).is_err());
        assert!(s.add_custom_field("Account", spec("Bad__Name__c")).is_err());
        assert!(s.add_custom_field("Nope", spec("Tier__c")).is_err());
        assert_eq!(s.object("Account").and_then(|o| o.field("tier__c")).map(|f| f.length), Some(80));
    }
}
