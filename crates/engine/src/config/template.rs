//! The template registry: the one list of templates this build knows, and the shape every
//! template has.
//!
//! A template is its config (built from the workflow's keys, written back for `config show`)
//! and what it tells the shared pipeline: the keys it uses, the fields it reads and writes (for
//! the ownership check against sync loops), what preflight must find in the org, and its run
//! (which gathers and decides, and hands its writes to the shared stages). Each template
//! implements [`Spec`] in its own workflow module; adding one is that module, its config
//! module, and one line in the [`templates!`] list in `config/mod.rs`.

use std::future::Future;
use std::pin::Pin;

pub(crate) use super::Workflow;
pub(crate) use super::ownership::{FieldRef, Flows};
pub(crate) use super::validate::Errors;
pub(crate) use super::wire::Workflow as Wire;
pub(crate) use crate::preflight::{Expect, Reqs, Use};
pub(crate) use crate::workflow::{Context, RunOptions};
use crate::workflow::{RunError, RunReport};

/// A run of a template, boxed so the registry can hold every template behind one type.
pub(crate) type RunFuture<'a> = Pin<Box<dyn Future<Output = Result<RunReport, RunError>> + Send + 'a>>;

/// What every template is (see the module docs).
pub(crate) trait Spec: Send + Sync {
    /// The template-specific keys of a workflow (beyond those every workflow has) this
    /// template reads; any other template's key set on it is reported, never ignored.
    fn keys() -> &'static [&'static str]
    where
        Self: Sized;

    /// Builds the config from the workflow's keys under `key`, reporting every problem.
    fn build(key: &str, w: &Wire, errors: &mut Errors) -> Option<Self>
    where
        Self: Sized;

    /// Writes the config back into the wire form (`config show`, round trips).
    fn to_wire(&self, out: &mut Wire);

    /// The fields this template reads as values and writes, each with its config key.
    fn flows(&self, key: &dyn Fn(&str) -> String) -> Flows;

    /// What preflight checks in the org's describe before anything is written.
    fn requirements(&self, reqs: &mut Reqs);

    /// One run of `workflow` (whose template this is).
    fn run<'a>(&'a self, ctx: &'a Context, w: &'a Workflow, options: &'a RunOptions) -> RunFuture<'a>;

    /// Whether the run checks the config against the org itself even when it only plans;
    /// otherwise a plan runs preflight after it, to show its problems.
    fn checks_itself(&self) -> bool {
        false
    }
}

/// Declares the templates: `Variant(Config) = "name"`, one line each. It makes
/// [`TemplateKind`](super::TemplateKind), [`Template`](super::Template) and their dispatch.
macro_rules! templates {
    ($( $(#[$doc:meta])* $variant:ident($config:ty) = $name:literal ),+ $(,)?) => {
        /// The template names known to this build (see [`templates!`]).
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum TemplateKind {
            $( $(#[$doc])* $variant ),+
        }

        impl TemplateKind {
            pub const ALL: &'static [TemplateKind] = &[$( TemplateKind::$variant ),+];

            /// The `template:` value.
            pub fn name(self) -> &'static str {
                match self {
                    $( TemplateKind::$variant => $name ),+
                }
            }

            pub fn from_name(name: &str) -> Option<Self> {
                Self::ALL.iter().copied().find(|kind| kind.name() == name)
            }

            /// The template-specific keys this template reads.
            pub(crate) fn keys(self) -> &'static [&'static str] {
                match self {
                    $( TemplateKind::$variant => <$config as template::Spec>::keys() ),+
                }
            }

            /// Builds the template's config from a workflow's keys.
            pub(crate) fn build(self, key: &str, w: &wire::Workflow, errors: &mut validate::Errors) -> Option<Template> {
                match self {
                    $( TemplateKind::$variant => {
                        <$config as template::Spec>::build(key, w, errors).map(Template::$variant)
                    } ),+
                }
            }
        }

        /// A workflow's template with its template-specific configuration.
        // Built once per load and kept behind the config's Arc: variants' sizes cost nothing.
        #[allow(clippy::large_enum_variant)]
        #[derive(Debug, Clone)]
        pub enum Template {
            $( $variant($config) ),+
        }

        impl Template {
            pub fn kind(&self) -> TemplateKind {
                match self {
                    $( Template::$variant(_) => TemplateKind::$variant ),+
                }
            }

            /// What the template is and does, for the pipeline.
            pub(crate) fn spec(&self) -> &dyn template::Spec {
                match self {
                    $( Template::$variant(c) => c ),+
                }
            }
        }
    };
}

pub(crate) use templates;
