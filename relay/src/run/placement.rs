//! Which part of a deployment this process runs: its role, its name on the broker, and the
//! accounts it keeps when `--accounts` narrows a connectors process (ARCHITECTURE.md §9).

use super::error::RunError;
use super::options::RunOptions;
use crate::config::{Config, Role};

/// What this process runs, from the config and the command line over it.
pub struct Placement {
    /// Everything, only the connectors, or only the relay core (`--role` over `roles`).
    pub role: Role,
    /// This process's name among the processes of one deployment (`--instance` over
    /// `instance`); it names the presence, the locks and the core's session.
    pub instance: String,
    /// `--accounts`: the only accounts a connectors process runs.
    only_accounts: Option<Vec<String>>,
}

impl Placement {
    /// Reads the role, the instance and the account subset of a run.
    ///
    /// # Errors
    /// [`RunError::UnknownAccount`] when `--accounts` names an account the config lacks.
    pub fn choose(config: &Config, options: &RunOptions) -> Result<Placement, RunError> {
        if let Some(subset) = &options.accounts {
            if let Some(unknown) = subset.iter().find(|id| !config.accounts.contains_key(*id)) {
                return Err(RunError::UnknownAccount(unknown.clone()));
            }
        }
        Ok(Placement {
            role: options.role.unwrap_or(config.role),
            instance: options
                .instance
                .clone()
                .unwrap_or_else(|| config.instance.clone()),
            only_accounts: options.accounts.clone(),
        })
    }

    /// True for a process of a scaled-out deployment (any role but `all`): it has a name on
    /// the broker, announces itself, and its core joins the shared group.
    pub fn scaled_out(&self) -> bool {
        self.role != Role::All
    }

    /// The instance name the core's session carries (`None`: the single-process core).
    pub fn core_instance(&self) -> Option<&str> {
        self.scaled_out().then_some(self.instance.as_str())
    }

    /// Drops the accounts a connectors process started with `--accounts` does not run, from
    /// the config read at start-up and from every reloaded one.
    pub fn keep_own_accounts(&self, config: &mut Config) {
        if self.role == Role::Connectors {
            if let Some(subset) = &self.only_accounts {
                config.accounts.retain(|id, _| subset.contains(id));
            }
        }
    }
}
