//! The LogQL syntax tree. Compiled forms (regexes, substring finders, templates) live in the
//! tree so that evaluation never compiles anything per line; equality compares the source
//! text, which is what round-trip tests need.

use memchr::memmem;
use regex::Regex;

use crate::labels::Matcher;
use crate::logql::template::Template;

/// A whole query.
#[derive(Debug, Clone, PartialEq)]
pub enum Expr {
    Log(LogExpr),
    Metric(MetricExpr),
}

/// A log query: a stream selector and a pipeline.
#[derive(Debug, Clone, PartialEq)]
pub struct LogExpr {
    pub matchers: Vec<Matcher>,
    pub pipeline: Vec<Stage>,
}

/// One pipeline stage.
#[derive(Debug, Clone, PartialEq)]
pub enum Stage {
    LineFilter(LineFilter),
    Parser(ParserStage),
    LabelFilter(LabelFilter),
    LineFormat(Template),
    LabelFormat(Vec<LabelFmt>),
    Drop(Vec<LabelSel>),
    Keep(Vec<LabelSel>),
    Decolorize,
}

/// Line filter operators.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FilterOp {
    /// `|=`
    Contains,
    /// `!=`
    NotContains,
    /// `|~`
    Match,
    /// `!~`
    NotMatch,
}

impl FilterOp {
    pub fn as_str(self) -> &'static str {
        match self {
            FilterOp::Contains => "|=",
            FilterOp::NotContains => "!=",
            FilterOp::Match => "|~",
            FilterOp::NotMatch => "!~",
        }
    }
    pub fn is_negative(self) -> bool {
        matches!(self, FilterOp::NotContains | FilterOp::NotMatch)
    }
}

/// `|= "a" or "b"`: one operator over alternatives. A positive filter keeps a line matching
/// any alternative; a negative one keeps a line matching none.
#[derive(Debug, Clone)]
pub struct LineFilter {
    pub op: FilterOp,
    pub values: Vec<String>,
    pub matchers: Vec<LineMatcher>,
}

impl PartialEq for LineFilter {
    fn eq(&self, o: &Self) -> bool {
        self.op == o.op && self.values == o.values
    }
}

impl LineFilter {
    pub fn matches(&self, line: &[u8]) -> bool {
        let any = self.matchers.iter().any(|m| m.is_match(line));
        if self.op.is_negative() { !any } else { any }
    }
}

/// A compiled line filter alternative.
#[derive(Debug, Clone)]
pub enum LineMatcher {
    /// A substring, found with memchr's SIMD `memmem`. An empty needle matches every line.
    Literal(memmem::Finder<'static>),
    /// A regular expression, with a literal every match must contain when one could be
    /// extracted: the cheap `memmem` rejects most lines before the regex runs.
    Regex { re: regex::bytes::Regex, required: Option<memmem::Finder<'static>> },
}

impl LineMatcher {
    pub fn literal(s: &str) -> Self {
        LineMatcher::Literal(memmem::Finder::new(s.as_bytes()).into_owned())
    }

    pub fn is_match(&self, line: &[u8]) -> bool {
        match self {
            LineMatcher::Literal(f) => f.needle().is_empty() || f.find(line).is_some(),
            LineMatcher::Regex { re, required } => {
                if let Some(r) = required
                    && r.find(line).is_none()
                {
                    return false;
                }
                re.is_match(line)
            }
        }
    }
}

/// Parsers that extract labels from the line.
#[derive(Debug, Clone, PartialEq)]
pub enum ParserStage {
    /// `json` or `json a="path.to[0]", b`.
    Json(Vec<(String, JsonPath)>),
    /// `logfmt [--strict] [--keep-empty] [a, b="c"]`.
    Logfmt {
        strict: bool,
        keep_empty: bool,
        params: Vec<(String, String)>,
    },
    Regexp(RegexpParser),
    Pattern(Pattern),
    Unpack,
}

/// A compiled `regexp` parser: its named groups become labels.
#[derive(Debug, Clone)]
pub struct RegexpParser {
    pub source: String,
    pub re: Regex,
    /// Sanitized label names, one per capture group (`None` for unnamed ones).
    pub names: Vec<Option<String>>,
}

impl PartialEq for RegexpParser {
    fn eq(&self, o: &Self) -> bool {
        self.source == o.source
    }
}

/// A `json` parameter's path: `a.b[0]["c.d"]`.
#[derive(Debug, Clone, PartialEq)]
pub struct JsonPath {
    pub source: String,
    pub steps: Vec<JsonStep>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum JsonStep {
    Key(String),
    Index(usize),
}

/// A compiled `pattern` expression: `<ip> - - <_> "<method> <uri> <_>" <status>`.
#[derive(Debug, Clone, PartialEq)]
pub struct Pattern {
    pub source: String,
    pub parts: Vec<PatternPart>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum PatternPart {
    Literal(String),
    /// A named capture; `None` for `<_>`.
    Capture(Option<String>),
}

/// Comparison operators of label filters and binary expressions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CmpOp {
    Eq,
    Neq,
    Gt,
    Ge,
    Lt,
    Le,
}

impl CmpOp {
    pub fn as_str(self) -> &'static str {
        match self {
            CmpOp::Eq => "==",
            CmpOp::Neq => "!=",
            CmpOp::Gt => ">",
            CmpOp::Ge => ">=",
            CmpOp::Lt => "<",
            CmpOp::Le => "<=",
        }
    }
    pub fn apply(self, a: f64, b: f64) -> bool {
        match self {
            CmpOp::Eq => a == b,
            CmpOp::Neq => a != b,
            CmpOp::Gt => a > b,
            CmpOp::Ge => a >= b,
            CmpOp::Lt => a < b,
            CmpOp::Le => a <= b,
        }
    }
}

/// What a numeric label filter compares: plain numbers, durations (in seconds) or byte sizes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ValueKind {
    Number,
    Duration,
    Bytes,
}

/// A label filter expression.
#[derive(Debug, Clone, PartialEq)]
pub enum LabelFilter {
    And(Box<LabelFilter>, Box<LabelFilter>),
    Or(Box<LabelFilter>, Box<LabelFilter>),
    Matcher(Matcher),
    /// `name op value`, value already converted (seconds for durations, bytes for sizes);
    /// `literal` is the text as written, for printing.
    Compare {
        name: String,
        op: CmpOp,
        kind: ValueKind,
        value: f64,
        literal: String,
    },
}

/// One `label_format` item.
#[derive(Debug, Clone, PartialEq)]
pub enum LabelFmt {
    /// `dst=src`
    Rename { dst: String, src: String },
    /// `dst="{{template}}"`
    Template { dst: String, tmpl: Template },
}

/// A `drop`/`keep` item: a name, or a matcher that must also match the value.
#[derive(Debug, Clone, PartialEq)]
pub enum LabelSel {
    Name(String),
    Matcher(Matcher),
}

/// `| unwrap [duration|duration_seconds|bytes](label)` and the label filters that may follow it.
#[derive(Debug, Clone, PartialEq)]
pub struct Unwrap {
    pub conv: UnwrapConv,
    pub label: String,
    pub post_filters: Vec<LabelFilter>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnwrapConv {
    Number,
    Duration,
    DurationSeconds,
    Bytes,
}

/// Range aggregation functions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RangeOp {
    CountOverTime,
    Rate,
    RateCounter,
    BytesOverTime,
    BytesRate,
    AbsentOverTime,
    SumOverTime,
    AvgOverTime,
    MaxOverTime,
    MinOverTime,
    FirstOverTime,
    LastOverTime,
    StddevOverTime,
    StdvarOverTime,
    QuantileOverTime,
}

impl RangeOp {
    pub const ALL: [RangeOp; 15] = [
        RangeOp::CountOverTime,
        RangeOp::Rate,
        RangeOp::RateCounter,
        RangeOp::BytesOverTime,
        RangeOp::BytesRate,
        RangeOp::AbsentOverTime,
        RangeOp::SumOverTime,
        RangeOp::AvgOverTime,
        RangeOp::MaxOverTime,
        RangeOp::MinOverTime,
        RangeOp::FirstOverTime,
        RangeOp::LastOverTime,
        RangeOp::StddevOverTime,
        RangeOp::StdvarOverTime,
        RangeOp::QuantileOverTime,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            RangeOp::CountOverTime => "count_over_time",
            RangeOp::Rate => "rate",
            RangeOp::RateCounter => "rate_counter",
            RangeOp::BytesOverTime => "bytes_over_time",
            RangeOp::BytesRate => "bytes_rate",
            RangeOp::AbsentOverTime => "absent_over_time",
            RangeOp::SumOverTime => "sum_over_time",
            RangeOp::AvgOverTime => "avg_over_time",
            RangeOp::MaxOverTime => "max_over_time",
            RangeOp::MinOverTime => "min_over_time",
            RangeOp::FirstOverTime => "first_over_time",
            RangeOp::LastOverTime => "last_over_time",
            RangeOp::StddevOverTime => "stddev_over_time",
            RangeOp::StdvarOverTime => "stdvar_over_time",
            RangeOp::QuantileOverTime => "quantile_over_time",
        }
    }

    pub fn from_name(s: &str) -> Option<Self> {
        RangeOp::ALL.into_iter().find(|o| o.as_str() == s)
    }

    /// Whether the function needs an `unwrap` (it aggregates extracted values, not lines).
    pub fn needs_unwrap(self) -> bool {
        !matches!(
            self,
            RangeOp::CountOverTime
                | RangeOp::Rate
                | RangeOp::BytesOverTime
                | RangeOp::BytesRate
                | RangeOp::AbsentOverTime
        )
    }

    /// Whether the function accepts an `unwrap` (`rate` does both: lines, or unwrapped values).
    pub fn allows_unwrap(self) -> bool {
        self.needs_unwrap() || self == RangeOp::Rate
    }
}

/// Vector aggregation operators.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VecOp {
    Sum,
    Avg,
    Min,
    Max,
    Count,
    Stddev,
    Stdvar,
    Topk,
    Bottomk,
    Sort,
    SortDesc,
}

impl VecOp {
    pub const ALL: [VecOp; 11] = [
        VecOp::Sum,
        VecOp::Avg,
        VecOp::Min,
        VecOp::Max,
        VecOp::Count,
        VecOp::Stddev,
        VecOp::Stdvar,
        VecOp::Topk,
        VecOp::Bottomk,
        VecOp::Sort,
        VecOp::SortDesc,
    ];
    pub fn as_str(self) -> &'static str {
        match self {
            VecOp::Sum => "sum",
            VecOp::Avg => "avg",
            VecOp::Min => "min",
            VecOp::Max => "max",
            VecOp::Count => "count",
            VecOp::Stddev => "stddev",
            VecOp::Stdvar => "stdvar",
            VecOp::Topk => "topk",
            VecOp::Bottomk => "bottomk",
            VecOp::Sort => "sort",
            VecOp::SortDesc => "sort_desc",
        }
    }
    pub fn from_name(s: &str) -> Option<Self> {
        VecOp::ALL.into_iter().find(|o| o.as_str() == s)
    }
}

/// `by (a, b)` or `without (a)`.
#[derive(Debug, Clone, PartialEq)]
pub struct Grouping {
    pub without: bool,
    pub labels: Vec<String>,
}

/// A range aggregation over a log query.
#[derive(Debug, Clone, PartialEq)]
pub struct RangeAgg {
    pub op: RangeOp,
    pub log: LogExpr,
    pub unwrap: Option<Unwrap>,
    /// Nanoseconds.
    pub range: i64,
    /// Nanoseconds.
    pub offset: i64,
    /// `quantile_over_time`'s φ.
    pub param: Option<f64>,
    pub grouping: Option<Grouping>,
}

/// A vector aggregation.
#[derive(Debug, Clone, PartialEq)]
pub struct VectorAgg {
    pub op: VecOp,
    /// `topk`/`bottomk`'s k.
    pub param: Option<f64>,
    pub grouping: Option<Grouping>,
    pub expr: Box<MetricExpr>,
}

/// Binary operators, by increasing precedence groups.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BinOp {
    Or,
    And,
    Unless,
    Cmp(CmpOp),
    Add,
    Sub,
    Mul,
    Div,
    Mod,
    Pow,
}

impl BinOp {
    pub fn as_str(self) -> &'static str {
        match self {
            BinOp::Or => "or",
            BinOp::And => "and",
            BinOp::Unless => "unless",
            BinOp::Cmp(c) => c.as_str(),
            BinOp::Add => "+",
            BinOp::Sub => "-",
            BinOp::Mul => "*",
            BinOp::Div => "/",
            BinOp::Mod => "%",
            BinOp::Pow => "^",
        }
    }
    pub fn precedence(self) -> u8 {
        match self {
            BinOp::Or => 1,
            BinOp::And | BinOp::Unless => 2,
            BinOp::Cmp(_) => 3,
            BinOp::Add | BinOp::Sub => 4,
            BinOp::Mul | BinOp::Div | BinOp::Mod => 5,
            BinOp::Pow => 6,
        }
    }
    pub fn is_set(self) -> bool {
        matches!(self, BinOp::Or | BinOp::And | BinOp::Unless)
    }
}

/// `on (a)` / `ignoring (a)` and `group_left`/`group_right`.
#[derive(Debug, Clone, PartialEq)]
pub struct VectorMatching {
    pub on: bool,
    pub labels: Vec<String>,
    pub group: Option<GroupSide>,
    pub include: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupSide {
    Left,
    Right,
}

#[derive(Debug, Clone, PartialEq)]
pub struct BinaryExpr {
    pub op: BinOp,
    pub lhs: MetricExpr,
    pub rhs: MetricExpr,
    pub return_bool: bool,
    pub matching: Option<VectorMatching>,
}

/// A metric query.
#[derive(Debug, Clone, PartialEq)]
pub enum MetricExpr {
    Range(RangeAgg),
    Vector(VectorAgg),
    Binary(Box<BinaryExpr>),
    Literal(f64),
    /// `vector(1)`
    VectorLit(f64),
    Paren(Box<MetricExpr>),
    /// `label_replace(v, "dst", "replacement", "src", "regex")`
    LabelReplace(Box<LabelReplace>),
}

#[derive(Debug, Clone)]
pub struct LabelReplace {
    pub expr: MetricExpr,
    pub dst: String,
    pub replacement: String,
    pub src: String,
    pub regex: String,
    pub re: Regex,
}

impl PartialEq for LabelReplace {
    fn eq(&self, o: &Self) -> bool {
        self.expr == o.expr
            && self.dst == o.dst
            && self.replacement == o.replacement
            && self.src == o.src
            && self.regex == o.regex
    }
}

impl MetricExpr {
    /// Whether the expression evaluates to a scalar (no vector anywhere in it).
    pub fn is_scalar(&self) -> bool {
        match self {
            MetricExpr::Literal(_) => true,
            MetricExpr::Paren(e) => e.is_scalar(),
            MetricExpr::Binary(b) => b.lhs.is_scalar() && b.rhs.is_scalar(),
            _ => false,
        }
    }
}
