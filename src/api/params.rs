//! Query parameters taken as text and parsed here, so that a wrong value gets a 400 naming the
//! parameter: warp's typed query refuses the whole query string without saying which one.
//! Values that parsed before parse the same (`str::parse`, as serde's URL decoding uses).

use std::str::FromStr;

use super::ApiError;

/// A whole number; `what` says which, for the refusal (`"a whole number"`, `"… zero or more"`).
pub(super) fn number<T: FromStr>(name: &str, text: Option<&str>, what: &str) -> Result<Option<T>, ApiError> {
    text.map(|t| {
        t.parse::<T>()
            .map_err(|_| ApiError::bad_request(format!("field '{name}': must be {what}, not {t:?}")))
    })
    .transpose()
}

/// `true` or `false`; absent is `false`.
pub(super) fn flag(name: &str, text: Option<&str>) -> Result<bool, ApiError> {
    match text {
        None | Some("false") => Ok(false),
        Some("true") => Ok(true),
        Some(other) => Err(ApiError::bad_request(format!(
            "field '{name}': must be true or false, not {other:?}"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_name_the_parameter_and_valid_values_parse_as_before() {
        assert_eq!(number::<i64>("limit", None, "a whole number"), Ok(None));
        assert_eq!(
            number::<i64>("offset", Some("-3"), "a whole number"),
            Ok(Some(-3))
        );
        assert_eq!(number::<i64>("limit", Some("+7"), "a whole number"), Ok(Some(7)));
        let refused = number::<u32>("limit", Some("-1"), "a whole number, zero or more").unwrap_err();
        assert_eq!(
            refused.message,
            "field 'limit': must be a whole number, zero or more, not \"-1\""
        );
        assert_eq!(refused.field(), Some("limit"));
        assert!(number::<i64>("offset", Some("99999999999999999999"), "a whole number").is_err());
        assert_eq!(flag("follow", None), Ok(false));
        assert_eq!(flag("follow", Some("true")), Ok(true));
        assert_eq!(flag("follow", Some("yes")).unwrap_err().field(), Some("follow"));
    }
}
