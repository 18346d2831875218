"Maths the sources cannot write as TeX: docstrings (plain text in the code, shown by show_doc) and the search index."

import re

MATH_FN = {"max", "min", "mean", "sum", "exp", "log", "sqrt"}
GREEK = {
    "alpha",
    "beta",
    "gamma",
    "delta",
    "epsilon",
    "eta",
    "theta",
    "lambda",
    "mu",
    "sigma",
    "tau",
    "phi",
    "rho",
    "pi",
    "Phi",
    "Sigma",
    "Delta",
    "Gamma",
    "Lambda",
}


def ascii_tex(expr: str) -> str:
    "TeX for a docstring's ASCII formula such as `dL/dW = G^T X` or `dL/dp = (p - t) / max(p (1 - p), 1e-12) / n`."
    var = lambda w: w if len(w) == 1 else f"\\{w}" if w in GREEK else f"\\text{{{w}}}"
    word = lambda m: (
        ("\\operatorname{mean}" if m.group(0) == "mean" else f"\\{m.group(0)}")
        if m.group(0) in MATH_FN
        else var(m.group(0))
    )
    t = re.sub(r"\bd([A-Za-z])/d(\w+)", lambda m: f"\\partial {m.group(1)}/\\partial " + var(m.group(2)), expr)
    t = re.sub(r"\b([A-Za-z])\^T\b", r"\1^\\top", t)
    t = re.sub(r"sqrt\(([^()]*)\)", r"\\sqrt{\1}", t)
    t = re.sub(r"\\sqrt\{([A-Za-z_]{2,})\}", r"\\sqrt{\\text{\1}}", t)
    t = re.sub(r"^U\[", r"\\mathcal{U}[", t)
    t = re.sub(r"(?<![\\\w{])[A-Za-z_][A-Za-z_]+(?![\w{])", word, t)  # words, not commands already made
    t = re.sub(r"\b1e-(\d+)\b", r"10^{-\1}", t)
    return t.replace("*", "\\cdot ").replace("_", "\\_")


FORMULA = re.compile(
    r"\bd[A-Z]/d\w+(?:\s*=\s*[^;`]+?(?=\s+(?:and|into|as|for|from|or|with|where|if|when|in|along|over)\s"
    r"|,\s+[A-Za-z]{2,}\b"
    r"|;|\.\s|\.?$))?"
    r"|\bU\[[^\]\s][^\]]*\]"
)  # dL/dW = G^T X; U[-1/sqrt(n), 1/sqrt(n)]


def docstring_maths(md: str) -> str:
    "Render the ASCII maths of show_doc's docstring line (the italic line under the signature) as TeX."
    def line(m):
        parts = re.split(r"(`[^`]*`)", m.group(1))  # leave code spans alone
        return (
            "*"
            + "".join(
                p if p.startswith("`") else FORMULA.sub(lambda f: f"${ascii_tex(f.group(0).strip())}$", p)
                for p in parts
            )
            + "*"
        )
    return re.sub(r"^\*(.+)\*$", line, md, flags=re.M)


TEX_WORDS = {
    "partial": "∂",
    "top": "ᵀ",
    "sum": "Σ",
    "prod": "Π",
    "infty": "∞",
    "approx": "≈",
    "le": "≤",
    "leq": "≤",
    "ge": "≥",
    "geq": "≥",
    "ne": "≠",
    "neq": "≠",
    "times": "×",
    "cdot": "·",
    "odot": "⊙",
    "in": "∈",
    "to": "→",
    "rightarrow": "→",
    "mapsto": "↦",
    "ldots": "…",
    "cdots": "⋯",
    "dots": "…",
    "pm": "±",
    "mid": "|",
    "nabla": "∇",
    "alpha": "α",
    "beta": "β",
    "gamma": "γ",
    "delta": "δ",
    "epsilon": "ε",
    "varepsilon": "ε",
    "eta": "η",
    "theta": "θ",
    "lambda": "λ",
    "mu": "μ",
    "sigma": "σ",
    "tau": "τ",
    "phi": "φ",
    "pi": "π",
    "rho": "ρ",
    "Delta": "Δ",
    "Sigma": "Σ",
    "max": "max",
    "min": "min",
    "log": "log",
    "exp": "exp",
    "tanh": "tanh",
}
SPACED = {"in", "to", "le", "ge", "leq", "geq", "approx", "times", "cdot"}


def tex_text(tex: str) -> str:
    ("Readable plain text for a TeX formula, for search snippets: `\\partial L/\\partial W = G^\\top X` -> "
     "`∂L/∂W = Gᵀ X`.")
    def command(m):
        name = m.group(1)
        if name in ("frac", "dfrac", "tfrac", "sqrt"):
            return m.group(0)
        return (" " if name in ("sum", "prod") else "") + TEX_WORDS.get(name, "") + (" " if name in SPACED else "")
    t = re.sub(r"\^\\top|\^\{\\top\}|\^T\b", "ᵀ", tex)
    t = re.sub(r"\\(?:left|right|big|Big|bigg|displaystyle|textstyle)\b", "", t)
    for _ in range(6):  # innermost braces first
        t = re.sub(r"\\(?:text|mathrm|mathbf|mathbb|operatorname|boldsymbol|mathcal|texttt)\s*\{([^{}]*)\}",
                   lambda m: {"R": "ℝ"}.get(m.group(1), m.group(1)), t)
        t = re.sub(r"\\([A-Za-z]+)\s*", command, t)
        t = re.sub(
            r"([_^])\{([^{}]*)\}",
            lambda m: (
                m.group(1) + (m.group(2) if re.fullmatch(r"[\w,.∂]+", m.group(2)) else f"({m.group(2)})")
            ),
            t,
        )
        t = re.sub(r"\\sqrt\s*\{([^{}]*)\}", r"√(\1)", t)
        t = re.sub(r"\\[dt]?frac\s*\{([^{}]*)\}\s*\{([^{}]*)\}", lambda m: "/".join(
            x if re.fullmatch(r"[^\s+\-=]+", x.strip()) else f"({x.strip()})" for x in m.groups()), t)
    t = re.sub(r"\\[,;:! ]|\\\\|&", " ", t).replace("{", "").replace("}", "").replace("\\", "")
    return re.sub(r"\s+", " ", t).strip()


def search_without_tex() -> None:
    "Make smalldocs index the maths of a section as readable text (∂L/∂W), not as raw TeX (\\partial L/\\partial W)."
    import smalldocs.markdown as sm

    if getattr(sm.Rules.search_text, "_minidl", False):
        return
    orig_plain, orig_search = sm.plain, sm.Rules.search_text

    def plain(tokens):
        return "".join(tex_text(t.content) if t.type == "math_inline" else orig_plain([t]) for t in tokens or [])

    def search_text(self, state):
        sm.plain = plain
        try:
            return orig_search(self, state)
        finally:
            sm.plain = orig_plain

    search_text._minidl = True
    sm.Rules.search_text = search_text
