//! `usagesync init` and `usagesync validate`: a starter config, and a check that reports every
//! problem of a config at once (with `--remote`, also every problem the org's describe shows).

use std::path::Path;

use anyhow::{Context as _, Result, bail};

use super::context::{self, EXIT_CONFIG};

pub fn init(path: &Path, force: bool) -> Result<u8> {
    if path.exists() && !force {
        bail!("{} already exists; pass --force to overwrite it", path.display());
    }
    std::fs::write(path, engine::config::STARTER).with_context(|| format!("Failed to write {}", path.display()))?;
    println!("Wrote {}. Edit it, then run `usagesync validate`.", path.display());
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
                println!("{}", serde_json::json!({"valid": false, "file": errors.origin, "errors": list}));
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
            println!("{}", serde_json::json!({"valid": false, "file": path.display().to_string(), "errors": list}));
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
        println!("{}", serde_json::json!({"valid": true, "file": path.display().to_string(), "workflows": names}));
    } else {
        println!("{} is valid: {} workflow(s): {}.", path.display(), config.workflows.len(), {
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
    let problems = engine::preflight::run_all(&client, config).await?;
    let calls = client.requests_sent();
    if json {
        println!(
            "{}",
            serde_json::json!({
                "valid": problems.is_empty(),
                "file": path.display().to_string(),
                "problems": problems,
                "describe_calls": calls,
            })
        );
    } else if problems.is_empty() {
        println!(
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
