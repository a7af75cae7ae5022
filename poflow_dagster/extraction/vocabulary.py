"""Multilingual words a document uses about itself: its title (what kind of document it is), units of measure,
and whether its prices include tax.

Column and field labels live in :mod:`.spreadsheet` (``COLUMN_SYNONYMS``, ``HEADER_FIELD_LABELS``,
``SUMMARY_LABELS``), shared by the spreadsheet and PDF readers. Every phrase here is compared after
:func:`.spreadsheet.normalize_label` (case, accents and punctuation folded), in EN, DE, FR, NL, ES, IT, PT,
JA, HE and AR.
"""

from __future__ import annotations

import functools
import re

from poflow_dagster.extraction.spreadsheet import normalize_label

__all__ = ["DOCUMENT_TITLES", "document_type_of", "is_title_phrase", "normalize_unit", "tax_inclusion_of"]

#: Document titles per document type (most specific first: "order confirmation" before "order").
DOCUMENT_TITLES: dict[str, tuple[str, ...]] = {
    "order_confirmation": (
        "order confirmation", "confirmation of order", "sales order confirmation", "order acknowledgement",
        "order acknowledgment", "auftragsbestatigung", "bestellbestatigung", "confirmation de commande",
        "accuse de reception de commande", "orderbevestiging", "opdrachtbevestiging", "confirmacion de pedido",
        "conferma d ordine", "conferma ordine", "confirmacao de encomenda", "confirmacao do pedido",
        "注文請書", "注文確認書", "受注確認書", "אישור הזמנה", "تأكيد الطلب",
    ),
    "delivery_note": (
        "delivery note", "delivery slip", "packing slip", "packing list", "dispatch note", "goods received note",
        "lieferschein", "bon de livraison", "bordereau de livraison", "pakbon", "afleverbon", "leveringsbon",
        "albaran", "nota de entrega", "documento di trasporto", "bolla di consegna", "ddt", "guia de remessa",
        "nota de remessa", "納品書", "出荷案内書", "תעודת משלוח", "מסמך משלוח", "إشعار التسليم", "مذكرة تسليم",
    ),
    "quote": (
        "quote", "quotation", "price quote", "sales quote", "estimate", "proforma", "pro forma",
        "pro forma invoice", "proforma invoice", "angebot", "kostenvoranschlag", "devis", "offre de prix",
        "offerte", "prijsopgave", "presupuesto", "cotizacion", "preventivo", "offerta", "orcamento",
        "cotacao", "見積書", "御見積書", "お見積書", "הצעת מחיר", "عرض سعر", "عرض أسعار",
    ),
    "invoice": (
        "invoice", "tax invoice", "commercial invoice", "sales invoice", "vat invoice", "receipt", "bill",
        "rechnung", "steuerrechnung", "handelsrechnung", "faktura", "faktura danovy doklad", "credit note",
        "gutschrift", "avoir", "facture d avoir", "nota de credito", "creditnota", "facture", "factuur", "factura", "fattura", "fatura", "nota fiscal",
        "請求書", "納品請求書", "領収書", "חשבונית", "חשבונית מס", "קבלה", "فاتورة", "فاتورة ضريبية",
    ),
    "purchase_order": (
        "purchase order", "order", "po", "purchase requisition", "bestellung", "einkaufsbestellung",
        "bon de commande", "commande", "bestelling", "inkooporder", "bestelbon", "orden de compra", "pedido",
        "nota de pedido", "ordine", "ordine d acquisto", "ordine di acquisto", "encomenda",
        "nota de encomenda", "注文書", "発注書", "購入注文書", "הזמנת רכש", "הזמנה", "أمر شراء", "طلب شراء",
    ),
}

#: Title words that are a document type only when the title says no more than that (``Order`` alone).
_BARE_ONLY = frozenset({"order", "po", "bill", "receipt", "commande", "pedido", "ordine", "encomenda"})

_UNITS: dict[str, tuple[str, ...]] = {
    "units": (
        "unit", "units", "pc", "pcs", "pce", "pces", "piece", "pieces", "ea", "each", "stk", "stck", "st",
        "stuck", "stueck", "pz", "pzs", "pezzi", "ud", "uds", "unidad", "unidades", "u", "unite", "unites",
        "stuks", "unidade", "unidades", "個", "点", "本", "枚", "יח", "יחידות", "وحدة", "قطعة", "x",
    ),
    "kg": ("kg", "kgs", "kilo", "kilos", "kilogram", "kilograms", "kilogramm", "kilogramme"),
    "g": ("g", "gr", "grs", "gram", "grams", "gramm", "gramme", "grammes", "grammi", "gramos"),
    "mg": ("mg",),
    "t": ("t", "ton", "tons", "tonne", "tonnes"),
    "lb": ("lb", "lbs", "pound", "pounds"),
    "oz": ("oz", "ounce", "ounces"),
    "l": ("l", "lt", "ltr", "liter", "liters", "litre", "litres", "litro", "litros"),
    "ml": ("ml", "milliliter", "millilitre"),
    "m": ("m", "meter", "meters", "metre", "metres", "metro", "metros", "lfm", "lm"),
    "cm": ("cm",),
    "mm": ("mm",),
    "m2": ("m2", "sqm", "qm"),
    "m3": ("m3", "cbm"),
    "ft": ("ft", "feet", "foot"),
    "days": ("day", "days", "tag", "tage", "jour", "jours", "dia", "dias", "giorni", "giorno", "dag", "dagen", "日"),
    "hours": ("h", "hr", "hrs", "hour", "hours", "std", "stunde", "stunden", "heure", "heures", "hora", "horas",
              "ore", "uur", "時間"),
    "months": ("month", "months", "mo", "monat", "monate", "mois", "mes", "meses", "mese", "mesi", "maand", "ヶ月"),
    "seats": ("seat", "seats", "user", "users", "licence", "licences", "license", "licenses"),
    "boxes": ("box", "boxes", "karton", "carton", "cartons", "ctn", "case", "cases", "caja", "cajas", "doos"),
    "packs": ("pack", "packs", "pk", "pkg", "package", "packages", "packung", "paquet", "paquete"),
    "pairs": ("pair", "pairs", "pr", "paar", "paire", "par"),
    "sets": ("set", "sets", "satz", "jeu", "juego"),
    "rolls": ("roll", "rolls", "rolle", "rollen", "rouleau", "rollo"),
    "bottles": ("bottle", "bottles", "btl", "flasche", "flaschen", "bouteille", "botella"),
    "dozen": ("dozen", "doz", "dz"),
}
_UNIT_INDEX = {normalize_label(word) or word: unit for unit, words in _UNITS.items() for word in words}

#: Phrases saying the prices are tax-inclusive (True) or net of tax (False).
_TAX_INCLUSION: dict[bool, tuple[str, ...]] = {
    True: (
        "incl vat", "incl tax", "including vat", "including tax", "inc vat", "inc gst", "incl gst", "vat included",
        "tax included", "tax inclusive", "vat inclusive", "gst inclusive", "prices include", "gross price",
        "inkl mwst", "inkl ust", "incl mwst", "einschl mwst", "brutto", "bruttopreis", "ttc", "tva incluse",
        "tva comprise", "incl btw", "inclusief btw", "iva incluido", "iva incluida", "iva inclusa",
        "iva compresa", "iva incluso", "com iva", "税込", "内税", "כולל מע מ", "شامل الضريبة", "enthaltene mwst",
        "enthaltene ust", "enthaltene umsatzsteuer", "darin enthalten", "darin enthaltene", "davon mwst",
        "dont tva", "of which vat", "includes vat", "includes tax", "incluye iva", "inclusa iva",
    ),
    False: (
        "excl vat", "excl tax", "excluding vat", "excluding tax", "ex vat", "ex gst", "excl gst", "plus vat",
        "net of tax", "zzgl mwst", "zzgl ust", "exkl mwst", "netto", "nettopreis", "ht", "hors taxes",
        "excl btw", "exclusief btw", "sin iva", "iva excluido", "iva esclusa", "sem iva", "税抜", "外税",
        "zuzuglich", "zuzueglich", "plus tax", "net total", "total net", "net amount", "subtotal net",
        "montant ht", "total ht", "base imponible", "imponibile",
        "לא כולל מע מ", "غير شامل الضريبة",
    ),
}
_TAX_PATTERNS = {
    flag: re.compile(r"(?:^|\s)(?:" + "|".join(re.escape(normalize_label(p)) for p in phrases) + r")(?:\s|$)")
    for flag, phrases in _TAX_INCLUSION.items()
}


@functools.lru_cache(maxsize=4096)
def normalize_unit(text: str) -> str | None:
    """The normalised unit of measure a word names (``Kgs`` -> ``kg``, ``Stück`` -> ``units``), else None."""
    key = normalize_label(text.strip().rstrip("."))
    if not key:
        key = text.strip().rstrip(".").lower()
    return _UNIT_INDEX.get(key)


_TITLE_INDEX = {normalize_label(phrase): kind for kind, phrases in DOCUMENT_TITLES.items() for phrase in phrases}
_LONGEST_TITLE = max(len(key.split()) for key in _TITLE_INDEX)



def is_title_phrase(text: str) -> bool:
    """True if ``text`` is exactly a document title phrase (``Invoice``, ``Bon de commande``, ``Mietrechnung``)."""
    if any(ch.isdigit() for ch in text):
        return False
    return normalize_label(text) in _TITLE_INDEX or (" " not in text.strip() and _compound_title([text]) is not None)


def document_type_of(title: str) -> str | None:
    """The document type a title names (``Auftragsbestätigung Nr. 4711`` -> ``order_confirmation``), else None.

    The title must *start* with the phrase; what follows may only be a reference: a number, a label such
    as ``No.``, a date (``Handelsrechnung Nr. TX-471102 vom 30.10.2018``), not a sentence (``Order total``).
    """
    tokens = title.split()
    if not tokens or len(tokens) > _LONGEST_TITLE + 6:
        return None
    for n in range(min(len(tokens), _LONGEST_TITLE), 0, -1):
        phrase = normalize_label(" ".join(tokens[:n]))
        kind = _TITLE_INDEX.get(phrase)
        if kind is None:
            continue
        rest = tokens[n:]
        if not rest or (phrase not in _BARE_ONLY and all(_is_reference_word(t) for t in rest)):
            return kind
        return None
    return _compound_title(tokens)


#: German compounds end with their kind: ``Mietrechnung``, ``Sammelbestellung``, ``Warenlieferschein``.
_COMPOUND_ENDINGS = {
    "rechnung": "invoice", "bestellung": "purchase_order", "lieferschein": "delivery_note", "angebot": "quote",
    "bestatigung": "order_confirmation",
}


def _compound_title(tokens: list[str]) -> str | None:
    """The type a one-word compound title names, followed by a reference only (``Mietrechnung Nr. 9``)."""
    first = normalize_label(tokens[0])
    if " " in first or not all(_is_reference_word(t) for t in tokens[1:]):
        return None
    for ending, kind in _COMPOUND_ENDINGS.items():
        if first.endswith(ending) and len(first) > len(ending) + 2:
            return kind
    return None


_REFERENCE_WORDS = frozenset(
    {"no", "nr", "number", "n", "num", "numero", "nummer", "ref", "id", "c", "copy", "original", "draft",
     "vom", "von", "du", "del", "of", "dated", "from", "le", "ze"}
)


def _is_reference_word(token: str) -> bool:
    """A word of a title's reference part: a code or date (has a digit), ``No.``, ``#``, ``vom``..."""
    if any(ch.isdigit() for ch in token):
        return True
    key = normalize_label(token)
    return not key or key in _REFERENCE_WORDS


def tax_inclusion_of(text: str) -> bool | None:
    """True / False when the text says prices include / exclude tax; None when it says neither."""
    key = normalize_label(text)
    if not key:
        return None
    if _TAX_PATTERNS[True].search(key):
        return True
    if _TAX_PATTERNS[False].search(key):
        return False
    return None
