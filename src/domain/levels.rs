//! Access levels on an agent, in order. Which operation needs which level is
//! policy (`datalog/agents.dl`); this type only names and orders them.

use serde::{Deserialize, Serialize};

use super::DomainError;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    View = 1,
    Use = 2,
    Edit = 3,
    Manage = 4,
    Share = 5,
    Owner = 6,
}

impl Level {
    pub const ALL: [Level; 6] = [
        Level::View,
        Level::Use,
        Level::Edit,
        Level::Manage,
        Level::Share,
        Level::Owner,
    ];

    pub fn rank(self) -> i64 {
        self as i64
    }

    pub fn from_rank(rank: i64) -> Option<Level> {
        Self::ALL.into_iter().find(|l| l.rank() == rank)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Level::View => "view",
            Level::Use => "use",
            Level::Edit => "edit",
            Level::Manage => "manage",
            Level::Share => "share",
            Level::Owner => "owner",
        }
    }

    /// Any level by its name, `owner` included (as a filter names it).
    pub fn parse(text: &str) -> Result<Level, DomainError> {
        Self::ALL
            .into_iter()
            .find(|l| l.as_str() == text)
            .ok_or_else(|| {
                DomainError::Invalid(format!(
                    "unknown level {text:?}; expected one of view, use, edit, manage, share, owner"
                ))
            })
    }

    /// A level that can be granted or delegated: anything but `owner`.
    pub fn parse_grantable(text: &str) -> Result<Level, DomainError> {
        match Self::ALL.into_iter().find(|l| l.as_str() == text) {
            Some(Level::Owner) => Err(DomainError::Invalid(
                "owner cannot be granted; transfer the agent instead".into(),
            )),
            Some(level) => Ok(level),
            None => Err(DomainError::Invalid(format!(
                "unknown level {text:?}; expected one of view, use, edit, manage, share"
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_are_ordered_and_parse() {
        assert!(Level::View < Level::Use && Level::Share < Level::Owner);
        assert_eq!(Level::parse_grantable("edit").unwrap(), Level::Edit);
        assert!(Level::parse_grantable("owner").is_err());
        assert!(Level::parse_grantable("root").is_err());
        for l in Level::ALL {
            assert_eq!(Level::from_rank(l.rank()), Some(l));
        }
    }
}
