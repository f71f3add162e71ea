//! Keycloak's step-up authentication, set up through the admin REST API as an operator would
//! in the admin console: a browser flow with two Levels of Authentication ("Condition - Level
//! of Authentication") and a client whose ACR-to-LoA map names them. The realm file stays as
//! shipped; each client gets a flow of its own.
//!
//! Level 2 is a second password prompt (Keycloak's "Password Form"): it stands in for a second
//! factor, which a headless test cannot provide (an OTP or a passkey), and Keycloak treats it
//! the same way (a level reached by its own step, asked again when its max age has passed).

use serde_json::{Value, json};

use super::Keycloak;

/// The ACR values the step-up client maps to Keycloak's levels (its `acr.loa.map`).
pub const ACR_LOA_MAP: &[(&str, u32)] = &[("silver", 1), ("gold", 2)];

/// Level 1 (username and password) counts for this long once reached.
const LEVEL_1_MAX_AGE_SECS: u64 = 36_000;

/// Level 2 is asked again at every login that requests it.
const LEVEL_2_MAX_AGE_SECS: u64 = 0;

/// One conditional step of the flow: the level, how long it counts, and the authenticator that
/// reaches it.
struct Level {
    level: u32,
    max_age_secs: u64,
    authenticator: &'static str,
}

/// Level 1: Keycloak's username-and-password page; level 2: a password-only page.
const LEVELS: [Level; 2] = [
    Level {
        level: 1,
        max_age_secs: LEVEL_1_MAX_AGE_SECS,
        authenticator: "auth-username-password-form",
    },
    Level {
        level: 2,
        max_age_secs: LEVEL_2_MAX_AGE_SECS,
        authenticator: "auth-password-form",
    },
];

impl Keycloak {
    /// Registers a client of its own for one Vestibule at `public_url` (a copy of the realm
    /// file's client, with its mappers and default scopes) with `acr.loa.map` = [`ACR_LOA_MAP`]
    /// and a browser flow of its own with both levels; returns its id and secret.
    pub async fn register_step_up_client(&self, public_url: &str) -> (String, String) {
        let suffix = public_url.rsplit(':').next().unwrap_or("x");
        let flow_id = self.create_step_up_flow(&format!("step-up {suffix}")).await;
        let (client_id, secret, mut client) = self.client_copy_for(public_url, "step-up");
        let loa_map: serde_json::Map<String, Value> = ACR_LOA_MAP
            .iter()
            .map(|(acr, level)| ((*acr).to_owned(), json!(level)))
            .collect();
        // The attribute is a JSON object in a string, as the admin console stores it.
        client["attributes"]["acr.loa.map"] = Value::String(Value::Object(loa_map).to_string());
        client["authenticationFlowBindingOverrides"] = json!({ "browser": flow_id });
        self.admin_send(reqwest::Method::POST, "clients", Some(&client))
            .await;
        (client_id, secret)
    }

    /// Creates the browser flow `alias` and returns its id:
    ///
    /// ```text
    /// Cookie                                        ALTERNATIVE
    /// <alias> forms                                 ALTERNATIVE
    ///   <alias> level 1                             CONDITIONAL
    ///     Condition - Level of Authentication (1)   REQUIRED
    ///     Username Password Form                    REQUIRED
    ///   <alias> level 2                             CONDITIONAL
    ///     Condition - Level of Authentication (2)   REQUIRED
    ///     Password Form                             REQUIRED
    /// ```
    async fn create_step_up_flow(&self, alias: &str) -> String {
        self.admin_send(
            reqwest::Method::POST,
            "authentication/flows",
            Some(&json!({
                "alias": alias,
                "description": "Vestibule's tests: step-up with two levels of authentication",
                "providerId": "basic-flow",
                "topLevel": true,
                "builtIn": false,
            })),
        )
        .await;
        let cookie = self.add_execution(alias, "auth-cookie").await;
        self.set_requirement(alias, &cookie, "ALTERNATIVE").await;
        let forms = format!("{alias} forms");
        let forms_id = self.add_sub_flow(alias, &forms).await;
        self.set_requirement(alias, &forms_id, "ALTERNATIVE").await;
        for level in &LEVELS {
            let sub_flow = format!("{alias} level {}", level.level);
            let sub_flow_id = self.add_sub_flow(&forms, &sub_flow).await;
            self.set_requirement(alias, &sub_flow_id, "CONDITIONAL")
                .await;
            let condition = self
                .add_execution(&sub_flow, "conditional-level-of-authentication")
                .await;
            self.set_requirement(alias, &condition, "REQUIRED").await;
            self.admin_send(
                reqwest::Method::POST,
                &format!("authentication/executions/{condition}/config"),
                Some(&json!({
                    "alias": format!("{sub_flow} condition"),
                    "config": {
                        "loa-condition-level": level.level.to_string(),
                        "loa-max-age": level.max_age_secs.to_string(),
                    },
                })),
            )
            .await;
            let form = self.add_execution(&sub_flow, level.authenticator).await;
            self.set_requirement(alias, &form, "REQUIRED").await;
        }
        let flows = self.admin_get("authentication/flows").await;
        flows
            .as_array()
            .expect("flows")
            .iter()
            .find(|flow| flow["alias"] == alias)
            .and_then(|flow| flow["id"].as_str())
            .unwrap_or_else(|| panic!("the flow {alias} was created"))
            .to_owned()
    }

    /// Adds the authenticator `provider` to the flow `flow_alias`; returns the execution's id.
    async fn add_execution(&self, flow_alias: &str, provider: &str) -> String {
        self.admin_send(
            reqwest::Method::POST,
            &format!(
                "authentication/flows/{}/executions/execution",
                encode(flow_alias)
            ),
            Some(&json!({ "provider": provider })),
        )
        .await;
        self.execution_of(flow_alias, |execution| {
            execution["providerId"] == provider && execution["level"] == 0
        })
        .await
    }

    /// Adds the sub-flow `alias` to the flow `flow_alias`; returns its execution's id.
    async fn add_sub_flow(&self, flow_alias: &str, alias: &str) -> String {
        self.admin_send(
            reqwest::Method::POST,
            &format!(
                "authentication/flows/{}/executions/flow",
                encode(flow_alias)
            ),
            Some(&json!({ "alias": alias, "type": "basic-flow", "description": alias })),
        )
        .await;
        self.execution_of(flow_alias, |execution| execution["displayName"] == alias)
            .await
    }

    /// The id of the execution of `flow_alias` that `matches` (its own level only).
    async fn execution_of(&self, flow_alias: &str, matches: impl Fn(&Value) -> bool) -> String {
        let executions = self
            .admin_get(&format!(
                "authentication/flows/{}/executions",
                encode(flow_alias)
            ))
            .await;
        executions
            .as_array()
            .expect("executions")
            .iter()
            .find(|execution| matches(execution))
            .and_then(|execution| execution["id"].as_str())
            .unwrap_or_else(|| panic!("no such execution in {flow_alias}: {executions}"))
            .to_owned()
    }

    /// Sets the requirement of the execution `id`, one of the top-level flow `top_alias`'s
    /// (Keycloak lists a flow's executions with every nested one, and updates them there).
    async fn set_requirement(&self, top_alias: &str, id: &str, requirement: &str) {
        let path = format!("authentication/flows/{}/executions", encode(top_alias));
        let executions = self.admin_get(&path).await;
        let mut execution = executions
            .as_array()
            .expect("executions")
            .iter()
            .find(|execution| execution["id"] == id)
            .unwrap_or_else(|| panic!("execution {id} is in {top_alias}: {executions}"))
            .clone();
        execution["requirement"] = Value::String(requirement.to_owned());
        self.admin_send(reqwest::Method::PUT, &path, Some(&execution))
            .await;
    }
}

/// A flow alias as one path segment (aliases have spaces).
fn encode(alias: &str) -> String {
    url::form_urlencoded::byte_serialize(alias.as_bytes())
        .collect::<String>()
        .replace('+', "%20")
}
