"""Merchant category codes (ISO 18245) grouped into the spending categories the features use."""

from __future__ import annotations

_RANGES: list[tuple[int, int, str]] = [
    (3000, 3299, "travel"),  # airlines
    (3351, 3441, "travel"),  # car rental
    (3501, 3999, "travel"),  # hotels
    (5000, 5199, "wholesale"),
]

_CODES: dict[str, set[int]] = {
    "groceries": {5411, 5422, 5441, 5451, 5462, 5499},
    "restaurants": {5811, 5812, 5813, 5814},
    "travel": {4111, 4112, 4411, 4511, 4582, 4722, 7011, 7012, 7512},
    "fuel": {5541, 5542, 5983},
    "electronics": {5045, 5722, 5732, 5734, 5946},
    "health": {5912, 8011, 8021, 8043, 8062, 8099},
    "utilities": {4814, 4899, 4900},
    "entertainment": {7832, 7922, 7941, 7991, 7996, 7999, 5815, 5816},
    "clothing": {5611, 5621, 5631, 5651, 5661, 5691, 5699},
    "transport": {4121, 4131, 4789},
    "education": {8211, 8220, 8241, 8299},
    "cash": {6010, 6011},
    "insurance": {6300},
    "government": {9211, 9222, 9311, 9399},
}

_BY_CODE: dict[int, str] = {code: group for group, codes in _CODES.items() for code in codes}


def mcc_group(mcc: int) -> str:
    group = _BY_CODE.get(mcc)
    if group is not None:
        return group
    for low, high, name in _RANGES:
        if low <= mcc <= high:
            return name
    return "other"
