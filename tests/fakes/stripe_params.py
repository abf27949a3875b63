"""Request parameters checked against the installed ``stripe`` library's own parameter types.

The library ships one ``TypedDict`` per endpoint (``stripe.params.checkout.SessionCreateParams``,
``stripe.params.RefundCreateParams``, …), generated from Stripe's OpenAPI spec. ``validate`` walks
one of them (``typing.get_type_hints(..., include_extras=True)``) against a decoded form body and
refuses, in Stripe's words, what Stripe's API refuses:

* a name the type does not know: ``Received unknown parameter: line_items[0][foo]``
  (``parameter_unknown``); this includes the library's own request options (``api_key``,
  ``idempotency_key``, ``stripe_account``, ``headers``, …), which the ``*Params`` types inherit
  from ``RequestOptions`` but which never go into a request body (Stripe refuses them:
  stripe/stripe-python#853);
* a required field left out: ``Missing required param: line_items[0][price_data][currency].``;
* a scalar where a hash or an array is expected, or the other way round: ``Invalid hash``,
  ``Invalid array``, ``Invalid string: {"a"=>"b"}``;
* a value outside an enum: ``Invalid locale: must be one of auto, bg, …, or zh-TW``. The library
  types every enum as ``Literal[...] | str`` so that new values do not break old clients; the
  ``str`` is that forward compatibility, not a licence: Stripe itself accepts only the listed
  values (``Literal[""]`` alone marks a free string that may be emptied);
* a malformed scalar: ``Invalid integer: 1.5`` (``parameter_invalid_integer``),
  ``Invalid boolean: yes``, ``Invalid decimal: x``;
* an empty string for a field that cannot be unset (``You passed an empty string for 'x'. …``).
"""

from __future__ import annotations

import functools
import re
import types
import typing
from decimal import Decimal
from typing import Any, Literal, NotRequired, Required, Union

import stripe._request_options as _request_options
import typing_extensions
from stripe._request_options import RequestOptions
from stripe._stripe_context import StripeContext
from stripe._stripe_object import UntypedStripeObject

__all__ = ["LIBRARY_OPTIONS", "ParamError", "fields", "validate"]

# The request options every ``*Params`` TypedDict inherits: arguments to the library, not to
# Stripe (they become headers or client settings).
LIBRARY_OPTIONS: frozenset[str] = frozenset(RequestOptions.__annotations__)

# ``RequestOptions`` names these under TYPE_CHECKING only; get_type_hints needs them to resolve
# the inherited annotations of every ``*Params`` type.
_NAMES: dict[str, Any] = {**vars(_request_options), "StripeContext": StripeContext}

_INTEGER = re.compile(r"-?\d+")
_DECIMAL = re.compile(r"-?(\d+(\.\d*)?|\.\d+)")


class ParamError(Exception):
    """A parameter Stripe refuses: ``message``, the ``param`` path and an optional ``code``."""

    def __init__(self, message: str, *, param: str | None, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.code = code


@functools.cache
def fields(params_type: type, *, top: bool = True) -> dict[str, tuple[Any, bool]]:
    """Field name -> (annotation without NotRequired/Required, required?) of a params TypedDict.
    At the top level the library's request options are left out (see ``LIBRARY_OPTIONS``)."""
    hints = typing.get_type_hints(params_type, localns=_NAMES, include_extras=True)
    required_keys: frozenset[str] = getattr(params_type, "__required_keys__", frozenset())
    inherited = top and set(hints) >= LIBRARY_OPTIONS
    out: dict[str, tuple[Any, bool]] = {}
    for name, hint in hints.items():
        if inherited and name in LIBRARY_OPTIONS:
            continue
        required = name in required_keys
        while typing.get_origin(hint) in (NotRequired, Required, typing.Annotated):
            if typing.get_origin(hint) is Required:
                required = True
            elif typing.get_origin(hint) is NotRequired:
                required = False
            hint = typing.get_args(hint)[0]
        out[name] = (hint, required)
    return out


def validate(params_type: type, params: dict[str, Any]) -> None:
    """Raise ``ParamError`` for the first thing in ``params`` (a decoded form: nested dicts,
    lists and strings) that Stripe would refuse for an endpoint typed ``params_type``."""
    _check_hash(params_type, params, None, top=True)


# The walk -------------------------------------------------------------------------------------


def _join(at: str | None, key: str | int) -> str:
    return f"{at}[{key}]" if at else str(key)


def _alternatives(hint: Any) -> list[Any]:
    """The members of a Union (flattened), without None and without Annotated/NotRequired."""
    while typing.get_origin(hint) in (NotRequired, Required, typing.Annotated):
        hint = typing.get_args(hint)[0]
    if typing.get_origin(hint) in (Union, types.UnionType):
        out: list[Any] = []
        for member in typing.get_args(hint):
            out.extend(_alternatives(member))
        return out
    if hint is type(None) or hint is None:
        return []
    return [hint]


def _is_array(hint: Any) -> bool:
    return hint is list or typing.get_origin(hint) is list


def _is_map(hint: Any) -> bool:
    origin = typing.get_origin(hint)
    return (
        hint is dict
        or origin is dict
        or hint is UntypedStripeObject
        or origin is UntypedStripeObject
        or (isinstance(origin, type) and issubclass(origin, UntypedStripeObject))
    )


def _item_type(hint: Any) -> Any:
    """The element type of ``List[X]``, or the value type of ``Dict[str, X]``; Any otherwise."""
    args = typing.get_args(hint)
    if not args:
        return Any
    return args[-1]


def _scalar_name(hint: Any) -> str:
    if hint is bool:
        return "boolean"
    if hint is int:
        return "integer"
    if hint in (float, Decimal):
        return "decimal"
    return "string"


def _parses(hint: Any, value: str) -> bool:
    if hint is str:
        return True
    if hint is bool:
        return value in ("true", "false")
    if hint is int:
        return _INTEGER.fullmatch(value) is not None
    if hint in (float, Decimal):
        return _DECIMAL.fullmatch(value) is not None
    return False


def _one_of(values: list[str]) -> str:
    """Stripe's enumeration in messages: ``a or b``; ``a, b, or c``."""
    if len(values) == 1:
        return values[0]
    if len(values) == 2:
        return f"{values[0]} or {values[1]}"
    return ", ".join(values[:-1]) + f", or {values[-1]}"


def _inspect(value: Any) -> str:
    """A value as Stripe's messages show it (Ruby's inspect): ``{"a"=>"b"}``, ``["a"]``."""
    if isinstance(value, dict):
        return "{" + ", ".join(f'"{k}"=>{_inspect(v)}' for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(_inspect(v) for v in value) + "]"
    return f'"{value}"'


def _empty(at: str) -> ParamError:
    return ParamError(
        f"You passed an empty string for '{at}'. We assume empty values are an attempt to "
        f"unset a parameter; however '{at}' cannot be unset. You should remove '{at}' from "
        "your request or supply a non-empty value.",
        param=at,
    )


def _malformed(hint: Any, value: Any, at: str) -> ParamError:
    name = _scalar_name(hint)
    shown = value if isinstance(value, str) else _inspect(value)
    code = "parameter_invalid_integer" if name == "integer" else None
    return ParamError(f"Invalid {name}: {shown}", param=at, code=code)


def _check_hash(params_type: type, value: dict[str, Any], at: str | None, *, top: bool) -> None:
    known = fields(params_type, top=top)
    unknown = [_join(at, k) for k in value if k not in known]
    if len(unknown) == 1:
        raise ParamError(
            f"Received unknown parameter: {unknown[0]}", param=unknown[0], code="parameter_unknown"
        )
    if unknown:
        raise ParamError(
            f"Received unknown parameters: {', '.join(unknown)}",
            param=unknown[0],
            code="parameter_unknown",
        )
    for name, (_, required) in known.items():
        if required and name not in value:
            where = _join(at, name)
            raise ParamError(
                f"Missing required param: {where}.", param=where, code="parameter_missing"
            )
    for name, item in value.items():
        _check(known[name][0], item, _join(at, name))


def _check(hint: Any, value: Any, at: str) -> None:
    alternatives = _alternatives(hint)
    if not alternatives or Any in alternatives or hint is Any:
        return
    literals = [
        v
        for a in alternatives
        if typing.get_origin(a) is Literal
        for v in typing.get_args(a)
        if isinstance(v, str)
    ]
    kinds = [a for a in alternatives if typing.get_origin(a) is not Literal]
    hashes = [a for a in kinds if typing_extensions.is_typeddict(a)]
    maps = [a for a in kinds if _is_map(a)]
    arrays = [a for a in kinds if _is_array(a)]
    scalars = [a for a in kinds if a in (str, int, bool, float, Decimal)]
    enum = [v for v in literals if v != ""]

    if isinstance(value, str):
        if value == "":
            if "" in literals:
                return
            raise _empty(at)
        if enum:
            if value in enum:
                return
            # `str` next to an enum is the library's forward compatibility: Stripe refuses.
            if any(_parses(s, value) for s in scalars if s is not str):
                return
            raise ParamError(f"Invalid {at}: must be one of {_one_of(enum)}", param=at)
        for scalar in scalars:
            if _parses(scalar, value):
                return
        if scalars:
            raise _malformed(scalars[0], value, at)
        if hashes or maps:
            raise ParamError("Invalid hash", param=at)
        if arrays:
            raise ParamError("Invalid array", param=at)
        return  # a type the walk does not know (none in the pinned library): let it pass

    if isinstance(value, dict):
        if hashes:
            first: ParamError | None = None
            for candidate in hashes:  # several object shapes: the first that fits
                try:
                    _check_hash(candidate, value, at, top=False)
                    return
                except ParamError as exc:
                    first = first or exc
            assert first is not None
            raise first
        if maps:
            for key, item in value.items():
                _check(_item_type(maps[0]), item, _join(at, key))
            return
        if arrays:
            raise ParamError("Invalid array", param=at)
        if scalars or enum:
            raise _malformed(scalars[0] if scalars else str, value, at)
        return

    if isinstance(value, list):
        if arrays:
            for i, item in enumerate(value):
                _check(_item_type(arrays[0]), item, _join(at, i))
            return
        if maps:  # a map whose keys all happen to be indices
            for i, item in enumerate(value):
                _check(_item_type(maps[0]), item, _join(at, i))
            return
        if hashes:
            raise ParamError("Invalid hash", param=at)
        if scalars or enum:
            raise _malformed(scalars[0] if scalars else str, value, at)
        return
