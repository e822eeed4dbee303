//! `usagesync init`, `usagesync validate` and `usagesync setup`: a starter config, a check that
//! reports every problem of a config at once (with `--remote`, also every problem the org's
//! describe shows), and preparing Pendo and Salesforce for the fields the config writes.

use std::path::Path;

use anyhow::{Context as _, Result, bail};

use super::context::{self, EXIT_CONFIG};

pub fn init(path: &Path, force: bool, json: bool) -> Result<u8> {
    if path.exists() && !force {
        bail!("{} already exists; pass --force to overwrite it", path.display());
    }
    std::fs::write(path, starter()).with_context(|| format!("Failed to write {}", path.display()))?;
    if json {
        outln!("{}", serde_json::json!({"written": path.display().to_string(), "workflows_enabled": 0}));
    } else {
        say!(
            "Wrote {}, with every workflow off: nothing is written to your org until you turn one on. \
             Next: point it at your org, then `usagesync validate --remote` and `usagesync sync engagement \
             --dry-run`; set `enabled: true` on the workflows you want, and start `usagesync run`.",
            path.display()
        );
    }
    Ok(0)
}

/// The first steps, at the top of the file `init` writes.
const FIRST_STEPS: &str = "\
# First steps (every workflow below starts disabled, so nothing is written to your org yet):
#   1. point connections: at your org and set the secrets they name;
#   2. usagesync validate --remote            # every object and field exists and takes what is sent
#   3. usagesync sync engagement --dry-run    # what a run would write and what it would cost
#   4. set `enabled: true` on the workflows you want, then start the daemon: usagesync run
";

/// The annotated example with every workflow disabled: each one writes to Salesforce or
/// Pendo, so a first `usagesync run` must not write before a person has seen a dry run.
pub fn starter() -> String {
    const OFF: &str = "    enabled: false                  # on once validate --remote and a dry run look right";
    let lines: Vec<&str> = engine::config::STARTER.lines().collect();
    let workflows = lines.iter().position(|l| l.starts_with("workflows:")).unwrap_or(lines.len());
    // Each workflow's block: from its name (two spaces in) to the next name or the end.
    let is_name = |l: &str| l.starts_with("  ") && !l.starts_with("   ") && !l.trim_start().starts_with('#');
    let mut out = String::from(FIRST_STEPS);
    let mut i = 0;
    while i < lines.len() {
        if i <= workflows || !is_name(lines[i]) {
            out.push_str(lines[i]);
            out.push('\n');
            i += 1;
            continue;
        }
        let end = (i + 1..lines.len())
            .find(|&j| is_name(lines[j]) || !lines[j].starts_with(' ') && !lines[j].is_empty())
            .unwrap_or(lines.len());
        let block = &lines[i..end];
        let has_enabled = block.iter().any(|l| l.starts_with("    enabled:"));
        for line in block {
            if line.starts_with("    enabled:") {
                out.push_str(OFF);
            } else {
                out.push_str(line);
            }
            out.push('\n');
            if !has_enabled && line.starts_with("    template:") {
                out.push_str(OFF);
                out.push('\n');
            }
        }
        i = end;
    }
    out
}

/// `usagesync console-password`: one line from stdin (the password), its Argon2 hash on stdout.
pub fn console_password() -> Result<u8> {
    let mut line = String::new();
    std::io::stdin().read_line(&mut line).context("Failed to read the password from stdin")?;
    let password = line.trim_end_matches(['\n', '\r']);
    if password.chars().count() < 12 {
        bail!("the password must have at least 12 characters");
    }
    let hash = crate::console::hash_password(password).map_err(|e| anyhow::anyhow!("Failed to hash: {e}"))?;
    outln!("{hash}");
    Ok(0)
}

pub async fn validate(path: &Path, secrets: bool, remote: bool, json: bool) -> Result<u8> {
    let config = match engine::config::load(path) {
        Ok(config) => config,
        Err(errors) => {
            if json {
                let list: Vec<_> = errors
                    .errors
                    .iter()
                    .map(
                        |e| serde_json::json!({"line": e.line, "column": e.column, "key": e.key, "message": e.message}),
                    )
                    .collect();
                outln!("{}", serde_json::json!({"valid": false, "file": errors.origin, "errors": list}));
            } else {
                eprintln!("{errors}");
                eprintln!("{} error(s) in {}.", errors.errors.len(), path.display());
            }
            return Ok(EXIT_CONFIG);
        }
    };
    if secrets && let Err(errors) = config.check_secrets(&context::env_var) {
        if json {
            let list: Vec<_> =
                errors.errors.iter().map(|e| serde_json::json!({"key": e.key, "message": e.message})).collect();
            outln!("{}", serde_json::json!({"valid": false, "file": path.display().to_string(), "errors": list}));
        } else {
            for e in &errors.errors {
                eprintln!("{}: {}: {}", path.display(), e.key, e.message);
            }
        }
        return Ok(EXIT_CONFIG);
    }
    if remote {
        return validate_remote(path, &config, json).await;
    }
    if json {
        let names: Vec<&String> = config.workflows.keys().collect();
        outln!("{}", serde_json::json!({"valid": true, "file": path.display().to_string(), "workflows": names}));
    } else {
        outln!("{} is valid: {} workflow(s): {}.", path.display(), config.workflows.len(), {
            let names: Vec<&str> = config.workflows.keys().map(String::as_str).collect();
            names.join(", ")
        });
    }
    Ok(0)
}

/// Preflight of every enabled workflow against the org: connects, describes each object the
/// config names once, writes nothing.
async fn validate_remote(path: &Path, config: &engine::config::Config, json: bool) -> Result<u8> {
    let client = engine::connect::salesforce_client(config, &context::env_var)?;
    let mut problems = engine::preflight::run_all(&client, config).await?;
    let calls = client.requests_sent();
    let pendo = engine::connect::pendo_client(config, &context::env_var)?;
    problems
        .extend(engine::pendo_fields::run_all(&pendo, config).await.context("Failed to read Pendo's metadata schema")?);
    if json {
        outln!(
            "{}",
            serde_json::json!({
                "valid": problems.is_empty(),
                "file": path.display().to_string(),
                "problems": problems,
                "describe_calls": calls,
            })
        );
    } else if problems.is_empty() {
        outln!(
            "{} is valid, and the org has every object and field it names ({calls} describe call(s)).",
            path.display()
        );
    } else {
        for p in &problems {
            eprintln!("{p}");
        }
        eprintln!("{} problem(s) against the org in {}.", problems.len(), path.display());
    }
    Ok(if problems.is_empty() { 0 } else { EXIT_CONFIG })
}

/// `usagesync setup pendo [--apply]`: the Pendo metadata fields the enabled workflows write and
/// Pendo lacks; created only with `--apply`, then read back. Exit 0 when nothing is missing (or all
/// were made), `EXIT_CONFIG` when something is left for a person: fields still missing without
/// `--apply`, fields of another type, fields in groups the API cannot create in.
pub async fn pendo(path: &Path, apply: bool, json: bool) -> Result<u8> {
    let config = context::load_config(path)?;
    let client = engine::connect::pendo_client(&config, &context::env_var)?;
    let wanted = engine::pendo_fields::wanted_all(&config);
    let read = |schemas: Vec<(pendo::Kind, pendo::entities::MetadataSchema)>| {
        move |kind| schemas.iter().find(|(k, _)| *k == kind).map(|(_, s)| s.clone())
    };
    let schemas =
        engine::pendo_fields::schemas(&client, &wanted).await.context("Failed to read Pendo's metadata schema")?;
    // Fields Pendo holds with another type: reported, never changed.
    let mistyped: Vec<_> = schemas
        .iter()
        .flat_map(|(kind, schema)| {
            let of_kind: Vec<_> = wanted.iter().filter(|w| w.kind == *kind).cloned().collect();
            let other: Vec<String> = engine::pendo_fields::gaps(&of_kind, schema)
                .into_iter()
                .filter(|(_, gap)| matches!(gap, engine::pendo_fields::Gap::OtherType(_)))
                .map(|(w, _)| w.path())
                .collect();
            engine::pendo_fields::check(&config, &of_kind, schema)
                .into_iter()
                .filter(move |p| p.field.as_ref().is_some_and(|f| other.contains(f)))
        })
        .collect();
    let missing = engine::pendo_fields::missing(&wanted, read(schemas));
    // Pendo's API creates fields in the agent and custom groups only.
    let (creatable, elsewhere): (Vec<_>, Vec<_>) =
        missing.into_iter().partition(|(_, group, _)| group == "custom" || group == "agent");
    let names = |specs: &[pendo::metadata::FieldSpec]| {
        specs.iter().map(|s| format!("{} ({})", s.name, s.field_type)).collect::<Vec<_>>().join(", ")
    };
    let mut made = 0;
    if apply {
        for (kind, group, specs) in &creatable {
            client.create_fields(*kind, group, specs).await.with_context(|| {
                format!("Failed to create Pendo {} fields in {group}: {}", kind.as_str(), names(specs))
            })?;
            made += specs.len();
        }
    }
    // Read back: what is still missing after the writes (or now, without --apply).
    let after =
        engine::pendo_fields::schemas(&client, &wanted).await.context("Failed to read Pendo's metadata schema")?;
    let still: usize = engine::pendo_fields::missing(&wanted, read(after)).iter().map(|(_, _, s)| s.len()).sum();
    let left = still + mistyped.len();
    if json {
        let list = |v: &[(pendo::Kind, String, Vec<pendo::metadata::FieldSpec>)]| -> Vec<serde_json::Value> {
            v.iter()
                .flat_map(|(k, g, specs)| {
                    specs.iter().map(move |s| {
                        serde_json::json!({"kind": k.as_str(), "group": g, "field": s.name, "type": s.field_type})
                    })
                })
                .collect()
        };
        outln!(
            "{}",
            serde_json::json!({
                "missing": list(&creatable),
                "not_creatable": list(&elsewhere),
                "other_type": mistyped.iter().map(|p| serde_json::json!({"field": p.field, "message": p.message})).collect::<Vec<_>>(),
                "created": made,
                "still_missing": still,
            })
        );
    } else {
        if wanted.is_empty() {
            outln!("No enabled workflow writes Pendo metadata.");
        } else if creatable.is_empty() && elsewhere.is_empty() && mistyped.is_empty() {
            outln!("Pendo has all {} metadata field(s) the enabled workflows write.", wanted.len());
        }
        for (kind, group, specs) in &creatable {
            let verb = if apply { "created" } else { "missing" };
            outln!("Pendo {} metadata, group {group}: {verb} {}", kind.as_str(), names(specs));
        }
        for (kind, group, specs) in &elsewhere {
            outln!(
                "Pendo {} metadata, group {group}: missing {} (Pendo's API creates fields in agent and custom only: create them in Pendo)",
                kind.as_str(),
                names(specs)
            );
        }
        for p in &mistyped {
            outln!("{p} (left alone: changing a field's type is a person's decision)");
        }
        if !apply && !creatable.is_empty() {
            outln!("Nothing was written; `usagesync setup pendo --apply` creates the missing fields.");
        } else if apply && made > 0 {
            outln!("Read back: {} field(s) still missing.", still);
        }
    }
    Ok(if left == 0 { 0 } else { EXIT_CONFIG })
}

/// `usagesync setup salesforce [--out DIR] [--remote]`: the custom fields every workflow of the
/// config writes or keys on, as a Metadata API package. Every workflow counts, enabled or not:
/// the package is deployed before a workflow is turned on. Shown first; files are written only
/// into `--out`. Exit 0 (a package is a proposal, never a failure).
pub async fn salesforce(path: &Path, out: Option<&Path>, force: bool, remote: bool, json: bool) -> Result<u8> {
    let config = context::load_config(path)?;
    let mut plan = super::sf_package::plan(
        config.workflows.values().map(|w| (w.name.as_str(), engine::preflight::requirements(w))),
    );
    let mut in_org = Vec::new();
    let mut calls = 0;
    if remote {
        let client = engine::connect::salesforce_client(&config, &context::env_var)?;
        let mut objects: Vec<String> = Vec::new();
        for o in plan.fields.iter().flat_map(|f| &f.sobjects) {
            if !objects.iter().any(|seen| seen.eq_ignore_ascii_case(o)) {
                objects.push(o.clone());
            }
        }
        let mut describes = engine::preflight::Describes::new();
        engine::preflight::describe(&client, &objects, &mut describes)
            .await
            .context("Failed to describe the org's objects")?;
        calls = client.requests_sent();
        plan.fields.retain(|f| {
            let has = f.sobjects.iter().any(|o| {
                describes
                    .get(&o.to_ascii_lowercase())
                    .and_then(Option::as_deref)
                    .is_some_and(|d| d.field(&f.name).is_some())
            });
            if has {
                in_org.push(f.member());
            }
            !has
        });
    }
    let api_version = &config.connections.salesforce.api_version;
    let files = super::sf_package::files(&plan.fields, api_version);
    let mut written = Vec::new();
    if let Some(dir) = out
        && !plan.fields.is_empty()
    {
        if dir.join("package.xml").exists() && !force {
            bail!("{} already holds a package.xml; pass --force to overwrite it", dir.display());
        }
        for (relative, text) in &files {
            let file = dir.join(relative);
            if let Some(parent) = file.parent() {
                std::fs::create_dir_all(parent).with_context(|| format!("Failed to make {}", parent.display()))?;
            }
            std::fs::write(&file, text).with_context(|| format!("Failed to write {}", file.display()))?;
            written.push(file.display().to_string());
        }
    }
    if json {
        outln!(
            "{}",
            serde_json::json!({
                "format": "metadata",
                "api_version": api_version,
                "fields": plan.fields,
                "skipped": plan.skipped,
                "in_org": in_org,
                "describe_calls": calls,
                "written": written,
            })
        );
        return Ok(0);
    }
    let objects = files.len().saturating_sub(1);
    if plan.fields.is_empty() {
        outln!("No custom field to create: the workflows write none the org lacks.");
    } else {
        say!(
            "{} custom field(s) on {objects} object(s) that the config's {} workflow(s) write or key on:",
            plan.fields.len(),
            config.workflows.len()
        );
        let rows: Vec<Vec<String>> = plan
            .fields
            .iter()
            .map(|f| {
                // Workflows grouped by what they do with the field: "nps, expansion (key)".
                let mut by: Vec<(&str, Vec<&str>)> = Vec::new();
                for u in &f.uses {
                    let usage = if u.usage == engine::preflight::Use::Key { "key" } else { u.usage.as_str() };
                    match by.iter_mut().find(|(k, _)| *k == usage) {
                        Some((_, names)) if names.contains(&u.workflow.as_str()) => {}
                        Some((_, names)) => names.push(&u.workflow),
                        None => by.push((usage, vec![&u.workflow])),
                    }
                }
                let by: Vec<String> =
                    by.iter().map(|(usage, names)| format!("{} ({usage})", names.join(", "))).collect();
                vec![f.member(), f.describe(), by.join("; ")]
            })
            .collect();
        super::table::print(&["field", "type", "used by"], &rows);
        if plan.fields.iter().any(|f| f.object == "Activity") {
            say!("Task and Event fields are Activity fields in Salesforce, so the package puts them there.");
        }
    }
    if !in_org.is_empty() {
        say!("Left out, the org has them ({calls} describe call(s)): {}.", in_org.join(", "));
    }
    let mut reasons: Vec<(&str, Vec<String>)> = Vec::new();
    for s in &plan.skipped {
        let name = format!("{}.{}", s.object, s.field);
        match reasons.iter_mut().find(|(r, _)| *r == s.reason) {
            Some((_, names)) => names.push(name),
            None => reasons.push((s.reason, vec![name])),
        }
    }
    for (reason, names) in &reasons {
        say!("Not in the package, {reason}: {}.", names.join(", "));
    }
    if plan.fields.is_empty() {
        return Ok(0);
    }
    if let Some(dir) = out {
        say!(
            "Wrote package.xml, {objects} object file(s) and the permission set {set} into {dir} \
             (Metadata API format). Deploy it, then assign the permission set to the integration \
             user: it opens the new fields to read and edit.\n  \
             sf project deploy start --metadata-dir {dir}\n  \
             sf org assign permset --name {set}",
            set = super::sf_package::PERMISSION_SET,
            dir = dir.display(),
        );
    } else {
        say!(
            "Nothing was written; `usagesync setup salesforce --out DIR` writes the package \
             (Metadata API format, for `sf project deploy start --metadata-dir DIR`)."
        );
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    #[test]
    fn the_starter_enables_no_workflow_and_keeps_every_other_line() {
        let text = super::starter();
        let config = engine::config::load_str(&text, "usagesync.yaml").unwrap();
        assert!(config.workflows.len() >= 7);
        for (name, w) in &config.workflows {
            assert!(!w.enabled, "{name} starts disabled");
        }
        let example = engine::config::load_str(engine::config::STARTER, "example.yaml").unwrap();
        assert_eq!(config.workflows.keys().collect::<Vec<_>>(), example.workflows.keys().collect::<Vec<_>>());
    }
}
