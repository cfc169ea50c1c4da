//! LogQL: our own lexer, parser, syntax tree and printer (no AGPL code), after Loki 2.9/3.x's
//! grammar and documentation.

pub mod ast;
pub mod format;
pub mod lexer;
pub mod parser;
pub mod template;

pub use ast::{Expr, LogExpr, MetricExpr};
pub use format::format_query;
pub use parser::{ParseError, parse_expr, parse_log_expr, parse_matchers};
