//! `meshfed init`: create a mesh identity and print what was made.

use std::fmt::Write as _;
use std::time::SystemTime;

use meshfed_node::init::{InitOptions, InitReport, init};
use meshfed_trust::files::{FileMode, IfExists};

use crate::cli::{GlobalArgs, InitArgs};
use crate::failure::Failure;
use crate::output::outln;

/// Runs `meshfed init` and prints a summary on success.
pub(crate) fn run(global: &GlobalArgs, args: InitArgs) -> Result<(), Failure> {
    let mut opts = InitOptions::new(global.dir.clone(), args.mesh, args.node, SystemTime::now());
    opts.federation_listen = args.listen;
    opts.api_listen = args.api;
    opts.role = args.role;
    opts.if_exists = if args.force {
        IfExists::Replace
    } else {
        IfExists::Refuse
    };
    opts.root_key_out = args.root_key_out;
    opts.node_cert_validity = args.node_cert_validity;
    let report = init(opts)?;
    outln!("{}", summary(&report).trim_end())?;
    Ok(())
}

/// A short human summary of the new identity.
fn summary(r: &InitReport) -> String {
    let mut out = String::new();
    let time = |t: SystemTime| humantime::format_rfc3339_seconds(t).to_string();
    if let Some(old) = &r.replaced {
        let node = old.node.as_deref().unwrap_or("(unreadable meshfed.toml)");
        let _ = write!(out, "Replaced the mesh identity {node}");
        if let Some(fp) = &old.ca_fingerprint {
            let _ = write!(out, " (CA fingerprint SHA-384 {fp})");
        }
        let _ = writeln!(out, " in {}", r.dir.display());
        if let Some(moved) = &old.store_moved_to {
            let _ = writeln!(
                out,
                "Moved the old store (its federations trust the old CA) to {}; the new identity starts with an empty registry",
                moved.display()
            );
        }
    }
    let _ = writeln!(out, "Created mesh identity in {}", r.dir.display());
    let _ = writeln!(out, "  mesh:              {}", r.identity.mesh);
    let _ = writeln!(out, "  node:              {}", r.identity.node);
    let _ = writeln!(out, "  node SAN:          {}", r.identity.uri());
    let _ = writeln!(out, "  CA fingerprint:    SHA-384 {}", r.ca_fingerprint);
    let _ = writeln!(out, "  CA expires:        {}", time(r.ca_not_after));
    let _ = writeln!(out, "  node cert expires: {}", time(r.node_cert_not_after));
    let _ = writeln!(out, "Files written:");
    for f in &r.files {
        let mode = match f.mode {
            FileMode::Private => "0600",
            FileMode::Public => "0644",
        };
        let _ = writeln!(out, "  {mode}  {}  ({})", f.path.display(), f.kind);
    }
    out
}
