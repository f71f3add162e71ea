//! The provider matrix in `docs/providers.md` is the suite's, not a claim: it is rendered from
//! `tests/provider_matrix.toml`, where every "tested" cell names the integration tests that prove
//! it, and this module fails when a named test does not exist, when a cell's status is not one of
//! the four the docs define, or when the page differs from the rendering. Run with
//! `VESTIBULE_WRITE_MATRIX=1` to rewrite the page's generated block after editing the data.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use figment::Figment;
use figment::providers::{Format, Toml};
use serde::Deserialize;

/// The capabilities, in the order of the table's columns, with their column titles.
const CAPABILITIES: [(&str, &str); 9] = [
    ("login", "login"),
    ("refresh", "refresh"),
    ("rotation", "refresh-token rotation"),
    ("logout", "logout"),
    ("back_channel_logout", "back-channel logout"),
    ("revocation", "revocation"),
    ("per_api_tokens", "per-API tokens"),
    ("dpop", "DPoP"),
    ("par", "PAR"),
];

const TESTED: &str = "tested";
const SIMULATED: &str = "tested (simulated)";
const NOT_OFFERED: &str = "not offered by the provider";
const NOT_SUPPORTED: &str = "not supported";

const BEGIN: &str = "<!-- BEGIN generated from tests/provider_matrix.toml: do not edit by hand -->";
const END: &str = "<!-- END generated -->";

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Matrix {
    providers: Vec<ProviderRow>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ProviderRow {
    name: String,
    /// `real`: the provider's own server runs in the suite; `simulated`: oidc-provider configured
    /// to behave as the provider documents.
    kind: String,
    page: String,
    cells: BTreeMap<String, Cell>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Cell {
    status: String,
    /// `module::test_name` of the integration tests proving a tested cell.
    #[serde(default)]
    tests: Vec<String>,
    /// Why a cell is not tested, or what a user does instead; shown under the table.
    #[serde(default)]
    note: Option<String>,
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn matrix() -> Matrix {
    Figment::from(Toml::file(root().join("tests/provider_matrix.toml")))
        .extract()
        .expect("tests/provider_matrix.toml is a valid matrix")
}

/// Every problem with the data: unknown statuses, missing cells, tested cells without a test
/// that exists, untested cells without a reason.
fn problems(matrix: &Matrix, tests_dir: &Path) -> Vec<String> {
    let mut problems = Vec::new();
    for row in &matrix.providers {
        let allowed_tested = match row.kind.as_str() {
            "real" => TESTED,
            "simulated" => SIMULATED,
            other => {
                problems.push(format!(
                    "{}: kind {other:?} is not real or simulated",
                    row.name
                ));
                continue;
            }
        };
        if !root().join("docs").join(&row.page).is_file() {
            problems.push(format!(
                "{}: page docs/{} does not exist",
                row.name, row.page
            ));
        }
        for key in row.cells.keys() {
            if !CAPABILITIES.iter().any(|(capability, _)| capability == key) {
                problems.push(format!("{}: unknown capability {key:?}", row.name));
            }
        }
        for (capability, _) in CAPABILITIES {
            let Some(cell) = row.cells.get(capability) else {
                problems.push(format!("{}: no cell for {capability}", row.name));
                continue;
            };
            let at = format!("{} / {capability}", row.name);
            match cell.status.as_str() {
                status if status == allowed_tested => {
                    if cell.tests.is_empty() {
                        problems.push(format!("{at}: {status:?} names no test"));
                    }
                    for test in &cell.tests {
                        if let Err(why) = test_exists(tests_dir, test) {
                            problems.push(format!("{at}: {why}"));
                        }
                    }
                }
                NOT_OFFERED | NOT_SUPPORTED => {
                    if cell.note.is_none() {
                        problems.push(format!("{at}: {:?} needs a note", cell.status));
                    }
                    if !cell.tests.is_empty() {
                        problems.push(format!("{at}: an untested cell names tests"));
                    }
                }
                other => problems.push(format!(
                    "{at}: status {other:?} is not {allowed_tested:?}, {NOT_OFFERED:?} or {NOT_SUPPORTED:?}"
                )),
            }
        }
    }
    problems
}

/// Whether `module::name` is a test function of the integration suite.
fn test_exists(tests_dir: &Path, test: &str) -> Result<(), String> {
    let (module, name) = test
        .split_once("::")
        .ok_or_else(|| format!("{test:?} is not module::name"))?;
    let source = std::fs::read_to_string(tests_dir.join(format!("{module}.rs")))
        .map_err(|_| format!("{test}: no module tests/integration/{module}.rs"))?;
    let lines: Vec<&str> = source.lines().collect();
    let declared = lines.iter().enumerate().any(|(at, line)| {
        let line = line.trim_start();
        let declares = line.starts_with(&format!("async fn {name}("))
            || line.starts_with(&format!("fn {name}("));
        declares
            && lines[at.saturating_sub(4)..at]
                .iter()
                .any(|above| above.trim_start().starts_with("#[") && above.contains("test"))
    });
    if declared {
        Ok(())
    } else {
        Err(format!("{test}: no such test function"))
    }
}

fn render(matrix: &Matrix) -> String {
    let mut out = String::new();
    out.push_str("| provider |");
    for (_, title) in CAPABILITIES {
        out.push_str(&format!(" {title} |"));
    }
    out.push_str("\n|---|");
    out.push_str(&"---|".repeat(CAPABILITIES.len()));
    out.push('\n');
    for row in &matrix.providers {
        out.push_str(&format!("| [{}]({}) |", row.name, row.page));
        for (capability, _) in CAPABILITIES {
            let status = row
                .cells
                .get(capability)
                .map_or("", |cell| cell.status.as_str());
            out.push_str(&format!(" {status} |"));
        }
        out.push('\n');
    }
    out.push_str("\nWhat proves each cell, and why the others are not tested:\n");
    for row in &matrix.providers {
        out.push_str(&format!("\n**{}**\n\n", row.name));
        for (capability, title) in CAPABILITIES {
            let Some(cell) = row.cells.get(capability) else {
                continue;
            };
            let mut line = format!("- {title}: {}", cell.status);
            if !cell.tests.is_empty() {
                let tests: Vec<String> =
                    cell.tests.iter().map(|test| format!("`{test}`")).collect();
                line.push_str(&format!(" by {}", tests.join(", ")));
            }
            if let Some(note) = &cell.note {
                line.push_str(&format!(". {note}"));
            }
            out.push_str(&line);
            out.push('\n');
        }
    }
    out
}

/// The page with its generated block replaced by `generated`.
fn with_block(page: &str, generated: &str) -> Option<String> {
    let start = page.find(BEGIN)? + BEGIN.len();
    let end = start + page[start..].find(END)?;
    Some(format!("{}\n{generated}{}", &page[..start], &page[end..]))
}

#[test]
fn the_provider_matrix_in_the_docs_is_rendered_from_tests_that_exist() {
    let matrix = matrix();
    let problems = problems(&matrix, &root().join("tests/integration"));
    assert!(
        problems.is_empty(),
        "tests/provider_matrix.toml:\n{}",
        problems.join("\n")
    );

    let path = root().join("docs/providers.md");
    let page = std::fs::read_to_string(&path).expect("docs/providers.md");
    let expected = with_block(&page, &render(&matrix)).expect("docs/providers.md has the markers");
    if std::env::var_os("VESTIBULE_WRITE_MATRIX").is_some() {
        std::fs::write(&path, &expected).expect("write docs/providers.md");
    }
    assert!(
        page == expected,
        "docs/providers.md differs from tests/provider_matrix.toml; \
         run VESTIBULE_WRITE_MATRIX=1 cargo test --test integration provider_matrix"
    );
}

#[test]
fn a_cell_naming_a_missing_test_or_an_unknown_status_is_a_problem() {
    let matrix: Matrix = Figment::from(Toml::string(
        r#"
        [[providers]]
        name = "Example"
        kind = "simulated"
        page = "providers.md"
        [providers.cells]
        login = { status = "tested (simulated)", tests = ["login::no_such_test"] }
        refresh = { status = "tested", tests = ["login::full_flow_login_user_api_call_and_logout"] }
        rotation = { status = "not offered by the provider" }
        logout = { status = "works, probably" }
        "#,
    ))
    .extract()
    .expect("the example parses");
    let problems = problems(&matrix, &root().join("tests/integration"));
    let expected = [
        "Example / login: login::no_such_test: no such test function",
        "Example / refresh: status \"tested\" is not \"tested (simulated)\"",
        "Example / rotation: \"not offered by the provider\" needs a note",
        "Example / logout: status \"works, probably\"",
        "Example: no cell for back_channel_logout",
    ];
    for wanted in expected {
        assert!(
            problems.iter().any(|problem| problem.starts_with(wanted)),
            "{wanted:?} not among {problems:#?}"
        );
    }
    // A real test is found, with its attribute above it.
    assert_eq!(
        test_exists(
            &root().join("tests/integration"),
            "login::full_flow_login_user_api_call_and_logout"
        ),
        Ok(())
    );
    // A helper function without a test attribute is not a test.
    assert!(
        test_exists(
            &root().join("tests/integration"),
            "login::assert_error_page"
        )
        .is_err()
    );
}
