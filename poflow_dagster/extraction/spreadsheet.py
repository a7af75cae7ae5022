"""Deterministic table extractor for CSV, TSV and XLSX purchase orders.

The sheet is seen as a grid of cells. The extractor

1. finds the **item header row**: the row whose cells best match the column
   synonyms below (en, de, fr, es, it, nl, pt, ja, he, ar; cs, pl in part; labels in other scripts
   are kept by :func:`normalize_label`); it needs a description-or-SKU column
   and a quantity-or-price column, columns may be in any order;
2. reads **header fields** (PO number, supplier, date, currency) from the rows above
   it, written ``Label: value`` in one cell or ``Label | value`` in adjacent cells, and the
   document type from a title there (:func:`.vocabulary.document_type_of`);
3. reads **item rows** below it; rows labelled subtotal / tax / shipping / total
   (in any of the languages) fill the PO's money fields instead of becoming items
   (several tax or shipping rows are added up; the last total wins); discount and
   "amount paid" rows are reported as issues, blank rows are skipped;
4. completes lines (``line_total = quantity x unit_cost``, ``unit_cost = line_total /
   quantity``, both rounded to cents) and records consistency warnings as issues.

Numbers are parsed with :mod:`poflow_dagster.extraction.numbers`, using the
document's own decimal style (decimal comma or point, voted over all its cells).
SKUs are kept as text, so ``00123`` stays ``00123``. A barcode column (EAN, UPC, GTIN, JAN, Strichcode,
código de barras, ...) fills ``barcode`` (:func:`.barcodes.clean_barcode`: leading zeros kept, Excel's
float forms undone from the cell's real value); when the table has no SKU column it is the SKU as well, and
a table without a barcode column whose SKUs are all 12-14 digit GTINs has them as barcodes too. Picture
columns (Image, Image URL, Picture, Photo, Bild, Imagen, ...: :mod:`.image_refs`) fill ``image_urls``; a cell
may hold several URLs separated by whitespace, ``,``, ``;`` or ``|``.
"""

from __future__ import annotations

import csv
import functools
import io
import re
import unicodedata
import zipfile
import zlib
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path

from poflow_dagster.domain.errors import PoflowError
from poflow_dagster.domain.models import Issue, ParsedPO, POLine
from poflow_dagster.extraction.barcodes import clean_barcode, gtin_or_none
from poflow_dagster.extraction.image_refs import image_columns, split_urls
from poflow_dagster.extraction.numbers import (
    as_money,
    ISO_CURRENCIES,
    detect_currency,
    guess_decimal_comma,
    parse_date,
    parse_decimal,
    to_decimal,
)

__all__ = [
    # Shared with the PDF extractor: the multilingual vocabulary and the table-reading context.
    "COLUMN_INDEX",
    "LABEL_INDEX",
    "SUMMARY_INDEX",
    "TITLE_PO_RE",
    "ParseContext",
    "header_columns",
    "lookup_synonym",
    "normalize_label",
    "sku_column",
    "synonym_index",
    "MAX_COLUMNS",
    "MAX_ROWS",
    "MAX_XLSX_ENTRIES",
    "MAX_XLSX_PART_BYTES",
    "MAX_XLSX_RATIO",
    "MAX_XLSX_UNCOMPRESSED_BYTES",
    "MAX_XML_TOKEN_BYTES",
    "MAX_XML_SPECIALS",
    "extract_delimited",
    "extract_rows",
    "extract_xlsx",
    "inspect_xlsx",
    "read_delimited",
]

#: More non-blank rows than this -> ``file_too_large``.
MAX_ROWS = 100_000
#: Cells beyond this column are ignored.
MAX_COLUMNS = 200
#: Sum of the declared uncompressed sizes of an xlsx's zip members (zip-bomb guard) -> ``file_too_large``.
MAX_XLSX_UNCOMPRESSED_BYTES = 200 * 1024 * 1024
#: Parts (zip entries) of an xlsx; real workbooks have tens -> ``file_too_complex`` above.
MAX_XLSX_ENTRIES = 1000
#: Uncompressed size of any one part (a 100,000-row sheet is ~40 MB of XML) -> ``file_too_complex`` above.
MAX_XLSX_PART_BYTES = 100 * 1024 * 1024
#: Compression ratio of a part over 1 MB (real sheet XML: < 30; deflate's maximum: ~1030).
MAX_XLSX_RATIO = 250
#: Longest XML tag, comment, processing instruction or text run in a part (Excel cells hold <= 32,767 chars).
MAX_XML_TOKEN_BYTES = 1024 * 1024
#: XML comments + processing instructions per part (Excel writes one: the XML declaration).
MAX_XML_SPECIALS = 10_000
#: The item header row must be within this many rows from the top of the sheet.
HEADER_SCAN_ROWS = 200

CENT = Decimal("0.01")

Cell = object  # str | int | float | Decimal | date | datetime | None
Row = list[Cell]


# --- vocabulary (all entries are written in normalised form, see normalize_label) -------------------

COLUMN_SYNONYMS: dict[str, tuple[str, ...]] = {
    "sku": (
        # en
        "sku", "item no", "item number", "item code", "item id", "part no", "part number",
        "product code", "product no", "product number", "product id", "article no",
        "article number", "code", "ref", "reference", "supplier sku", "vendor sku",
        "mpn", "catalog no", "catalogue no", "style no", "model no", "model",
        # de
        "artikelnummer", "artikelnr", "art nr", "artnr", "art no", "artikel nr",
        "artikel no", "teilenummer", "materialnummer", "produktnummer", "sachnummer",
        # fr
        "ref article", "reference article", "code article", "code produit", "no article",
        "numero d article", "numero article",
        # es
        "codigo", "cod", "referencia", "codigo de articulo", "codigo articulo",
        "codigo de producto", "codigo producto", "no articulo", "no de articulo",
        # it
        "codice", "codice articolo", "cod articolo", "codice prodotto", "riferimento", "rif",
        # nl
        "artikelcode", "productcode", "referentie", "artikel nummer",
        # pt
        "codigo do produto", "codigo do artigo", "ref produto",
        # ja / he / ar
        "品番", "商品コード", "品目コード", "製品番号", "型番", "コード", "מק\"ט", "מקט", "קוד פריט", "קוד",
        "رمز الصنف", "كود الصنف", "رقم الصنف", "الرمز", "كود",
    ),
    # UPC / EAN / GTIN: read into ``barcode``; a barcode column is the SKU too when there is no SKU column.
    "barcode": (
        # en (``EAN-13``, ``GTIN-14``, ``UPC-A`` lose their digits in normalize_label: ``ean``, ``gtin``, ``upc a``)
        "barcode", "bar code", "barcode no", "barcode number", "ean", "ean13", "ean8", "ean code", "ean no",
        "ean number", "ean upc", "ean gtin", "upc", "upca", "upc a", "upc code", "upc no", "upc number",
        "upc ean", "gtin", "gtin13", "gtin14", "gtin12", "gtin8", "gtin code", "gtin no", "gtin number",
        "gtin ean", "jan", "jan code", "isbn", "item upc", "item ean", "item barcode", "item gtin",
        "product barcode", "product ean", "product upc", "product gtin", "unit upc", "unit barcode",
        "retail upc", "consumer upc",
        # de
        "strichcode", "ean nummer", "ean nr", "ean code nr", "barcode nummer",
        # fr
        "code ean", "code barre", "code barres", "code a barres", "code gtin", "code upc", "gencod",
        # es / pt
        "codigo de barras", "codigo ean", "codigo barras", "cod barras", "codigo gtin", "codigo upc",
        # it
        "codice a barre", "codice ean", "codice gtin",
        # nl
        "streepjescode", "barcodenummer",
    ),
    "description": (
        # en
        "description", "item description", "product description", "product name",
        "product", "item name", "item", "name", "article", "title", "goods", "details", "desc",
        # de
        "bezeichnung", "beschreibung", "artikelbezeichnung", "artikelbeschreibung",
        "produktbezeichnung", "warenbezeichnung", "produkt", "artikel",
        # fr
        "designation", "libelle", "produit", "nom du produit", "nom",
        # es
        "descripcion", "producto", "articulo", "nombre", "concepto", "detalle",
        # it
        "descrizione", "prodotto", "articolo", "denominazione",
        # nl
        "omschrijving", "beschrijving", "productnaam", "naam",
        # pt
        "descricao", "produto", "artigo", "designacao",
        # cs / pl
        "polozka", "nazev", "popis", "nazwa", "opis", "towar",
        # ja / he / ar
        "品名", "摘要", "商品名", "品目", "内容", "תיאור", "פריט", "שם פריט", "תאור", "الوصف", "البيان", "الصنف",
        "اسم الصنف", "المنتج",
    ),
    "quantity": (
        # en
        "qty", "quantity", "qty ordered", "quantity ordered", "order qty", "ordered qty",
        "ordered", "units", "pcs", "total qty", "total quantity",
        # de
        "menge", "anzahl", "stuck", "stk", "bestellmenge", "anz",
        # fr
        "quantite", "qte", "qte commandee", "quantite commandee",
        # es
        "cantidad", "cant", "uds", "unidades", "cantidad pedida",
        # it
        "quantita", "qta", "q ta", "pezzi", "pz",
        # nl
        "aantal", "hoeveelheid", "stuks",
        # pt
        "quantidade", "qtd", "qtde",
        "qty hr", "qty hrs", "hours", "hrs",
        # cs / pl
        "pocet", "mnozstvi", "ilosc",
        # ja / he / ar
        "数量", "数", "כמות", "الكمية", "العدد",
    ),
    "unit_cost": (
        # en
        "unit cost", "unit price", "price", "cost", "price each", "each", "rate",
        "cost price", "net price", "price per unit", "unit net price", "purchase price",
        "wholesale price", "wholesale",
        # de
        "einzelpreis", "preis", "stuckpreis", "ep", "e preis", "einkaufspreis", "ek preis",
        "nettopreis", "einheitspreis", "preis pro stuck", "preis je einheit",
        # fr
        "prix unitaire", "prix", "pu", "p u", "prix unit", "prix ht", "prix unitaire ht",
        "cout unitaire", "tarif",
        # es
        "precio unitario", "precio", "precio unit", "coste unitario", "costo unitario",
        "p unit", "precio neto",
        # it
        "prezzo unitario", "prezzo", "prezzo unit",
        # nl
        "stukprijs", "prijs", "eenheidsprijs", "prijs per stuk", "inkoopprijs",
        # pt
        "preco unitario", "preco", "custo unitario", "valor unitario",
        "einzel", "e preis netto", "einzelpreis netto", "preis netto", "net unit price", "unit price excl vat",
        "unit price excl", "unit price excl tax", "price excl vat",
        # cs / pl
        "cena za polozku", "cena za jednotku", "jednotkova cena", "cena", "cena jedn", "cena netto",
        # ja / he / ar
        "単価", "価格", "מחיר יחידה", "מחיר ליחידה", "מחיר", "سعر الوحدة", "السعر", "سعر",
    ),
    "line_total": (
        # en
        "total", "amount", "line total", "extended", "extended price", "ext price",
        "extension", "line amount", "total price", "net amount", "total cost", "value",
        "subtotal",
        # de
        "gesamt", "gesamtpreis", "betrag", "summe", "gesamtbetrag", "positionsbetrag",
        "nettobetrag", "wert", "zeilensumme",
        # fr
        "montant", "montant ht", "total ht", "prix total", "montant total",
        # es
        "importe", "importe total", "precio total", "valor",
        # it
        "importo", "totale", "prezzo totale", "importo totale",
        # nl
        "bedrag", "totaal", "totaalprijs", "regeltotaal",
        # pt
        "valor total", "preco total",
        "netto", "nettowert", "entgelt", "price w o tax", "amount w o tax", "total w o tax", "amount excl vat", "line amount excl vat",
        "line amount", "net value", "total excl vat", "amount excl tax", "net", "gesamt netto", "betrag netto",
        "gesamtpreis netto", "montant net", "total net",
        # cs / pl
        "celkem", "celkem bez dane", "cena celkem", "wartosc", "wartosc netto",
        # ja / he / ar
        "金額", "合計", "小計", "סכום", "סה\"כ", "סהכ", "סך הכל", "المبلغ", "الإجمالي", "المجموع", "القيمة",
    ),
    # Unit of measure printed in a column of its own (``kg``, ``pcs``): read into ``POLine.unit``.
    "unit": (
        "unit", "uom", "u m", "unit of measure", "units of measure", "measure", "einheit", "me", "mengeneinheit",
        "unite", "unidad", "unita", "eenheid", "unidade", "mj", "jm", "jednostka", "単位", "יחידה", "יח", "الوحدة",
        "وحدة",
    ),
    # The position number (``Pos. Artikelbeschreibung`` splits into two columns; a ``No.`` column holding
    # codes rather than 1, 2, 3 is read as the SKU by the PDF reader).
    "position": ("pos", "position", "pos nr", "posnr", "pos no", "line no", "lfd nr", "ln", "poz", "no", "nr"),
    # The line's tax rate (read by no one; knowing the column keeps its values out of the others).
    "tax_rate": (
        "vat", "vat rate", "tax", "taxes", "tax rate", "vat no", "tax no", "gst", "mwst", "ust", "mwst satz", "ust satz",
        "steuer", "steuersatz", "tva", "taux tva", "iva", "btw", "dph", "vat code", "tax code", "税率", "מע מ",
        "ضريبة",
    ),
    # Money off the line, as an amount or a percentage.
    "discount": (
        "discount", "disc", "disc no", "discount no", "rem", "rabais", "remise no", "rabatt no", "descuento no", "rabatt", "nachlass", "remise", "descuento", "dto",
        "sconto", "korting", "desconto", "割引", "値引", "הנחה", "خصم",
    ),
}

#: Description synonyms that, when a better description column exists, mean "item code".
_ITEM_AS_SKU = frozenset({"item", "article", "artikel", "articulo", "articolo", "artigo"})

HEADER_FIELD_LABELS: dict[str, tuple[str, ...]] = {
    "po_number": (
        "po", "po no", "po number", "po nr", "po id", "purchase order", "purchase order no",
        "purchase order number", "order", "order no", "order number", "order id",
        "order ref", "order reference",
        "bestellnummer", "bestell nr", "bestellnr", "bestellung", "bestellung nr",
        "bestellung no", "auftragsnummer", "auftrag nr", "auftragsnr", "auftrag",
        "no de commande", "n de commande", "numero de commande", "commande",
        "commande no", "bon de commande", "bon de commande no", "no commande",
        "ref commande", "reference commande",
        "numero de pedido", "no de pedido", "n de pedido", "pedido", "pedido no",
        "no pedido", "num pedido", "orden de compra", "numero de orden", "no orden",
        "numero ordine", "no ordine", "n ordine", "ordine", "ordine no", "numero d ordine",
        "bestelnummer", "bestelling", "bestelnr", "ordernummer", "order nummer",
        "inkoopordernummer",
        "numero do pedido", "numero da encomenda", "encomenda", "no encomenda",
        "n encomenda",
        "注文番号", "発注番号", "注文no", "発注no", "伝票番号", "מספר הזמנה", "הזמנה מס", "رقم الطلب",
        "رقم أمر الشراء",
    ),
    "supplier_name": (
        "supplier", "supplier name", "vendor", "vendor name", "seller", "sold by", "from",
        "lieferant", "lieferantenname", "verkaufer", "fournisseur", "vendeur",
        "proveedor", "fornitore", "leverancier", "fornecedor",
        "仕入先", "発注先", "ספק", "المورد",
    ),
    "order_date": (
        "date", "order date", "po date", "date ordered", "issue date",
        "datum", "bestelldatum", "auftragsdatum",
        "date de commande", "date commande", "date de la commande",
        "fecha", "fecha de pedido", "fecha del pedido", "fecha pedido",
        "data", "data ordine", "data dell ordine", "data do pedido", "data da encomenda",
        "besteldatum", "orderdatum",
        "注文日", "発注日", "日付", "発行日", "תאריך", "תאריך הזמנה", "التاريخ", "تاريخ الطلب",
    ),
    "currency": (
        "currency", "currency code", "wahrung", "devise", "monnaie", "moneda", "divisa",
        "valuta", "moeda",
    ),
}

SUMMARY_LABELS: dict[str, tuple[str, ...]] = {
    "subtotal": (
        "subtotal", "sub total", "net total", "total net", "total excl tax", "cena bez dane", "zaklad dane",
        "positionssumme", "summe positionen", "total w o tax", "total without tax", "total without taxes",
        "total excl taxes", "nettobetrag", "netto summe", "positionen netto", "warenwert", "montant hors taxes",
        "total hors tva", "importe neto", "untaxed amount", "amount before tax", "total before tax",
        "total excl vat", "merchandise total", "items total", "goods total",
        "zwischensumme", "nettosumme", "summe netto", "gesamt netto", "netto",
        "sous total", "total ht", "montant ht", "total hors taxes",
        "base imponible", "suma", "imponibile", "totale imponibile", "totale parziale",
        "subtotaal", "totaal excl btw", "sub totaal",
        "小計", "税抜合計", "סה\"כ לפני מע\"מ", "סכום ביניים", "المجموع الفرعي",
    ),
    "tax": (
        "tax", "taxes", "sales tax", "total tax", "tax amount", "vat", "gst", "hst", "pst",
        "mwst", "ust", "umsatzsteuer", "mehrwertsteuer", "steuer",
        "tva", "montant tva", "taxe", "iva", "igic", "impuesto", "impuestos", "imposta",
        "btw", "imposto", "dph", "steuerbetrag", "ust betrag", "mwst betrag", "umsatzsteuerbetrag", "tax amount", "vat total", "tax total", "total tax", "total vat", "total tva",
        "消費税", "税額", "מע\"מ", "ضريبة القيمة المضافة", "الضريبة",
    ),
    "shipping": (
        "shipping", "shipping handling", "shipping and handling", "s h", "freight",
        "delivery", "carriage", "postage", "handling",
        "versand", "versandkosten", "fracht", "frachtkosten", "lieferkosten", "porto",
        "frais de port", "port", "livraison", "frais de livraison", "transport",
        "envio", "gastos de envio", "portes", "spedizione", "trasporto",
        "spese di spedizione", "verzending", "verzendkosten", "frete",
        "送料", "משלוח", "الشحن",
    ),
    "total": (
        "total", "grand total", "total due", "amount due", "order total", "total amount",
        "balance due", "total incl tax", "total incl vat",
        "gesamt", "gesamtsumme", "gesamtbetrag", "summe", "endsumme", "rechnungsbetrag",
        "gesamt brutto", "summe brutto", "brutto",
        "total ttc", "montant ttc", "montant total", "total general",
        "importe total", "total pedido", "totale", "totale generale", "totale ordine",
        "totaal", "totaal incl btw", "valor total", "total geral", "celkem", "celkem k uhrade", "k uhrade",
        "gross total", "amount to pay", "bruttosumme", "bruttobetrag", "rechnungssumme", "endbetrag",
        "faelliger betrag", "falliger betrag", "net a payer", "total ttc", "zu zahlen", "zahlbetrag",
        "合計", "総合計", "合計金額", "税込合計", "ご請求金額", "סה\"כ", "סה\"כ לתשלום", "סהכ", "الإجمالي",
        "المجموع", "الإجمالي المستحق",
    ),
    "discount": ("discount", "rabatt", "nachlass", "remise", "descuento", "sconto", "korting", "desconto"),
    "paid": (
        "paid", "amount paid", "already paid", "deposit", "prepaid", "bezahlt", "bereits bezahlt", "anzahlung",
        "anzahlungen", "erhaltene anzahlungen", "vorauszahlung", "acompte", "deja paye", "pagado", "anticipo",
    ),
}


def synonym_index(table: dict[str, tuple[str, ...]]) -> dict[str, tuple[str, int]]:
    """Map each normalised synonym to (field, rank); the first field listing it wins."""
    out: dict[str, tuple[str, int]] = {}
    for name, synonyms in table.items():
        for rank, synonym in enumerate(synonyms):
            out.setdefault(synonym if synonym.isascii() else normalize_label(synonym), (name, rank))
    return out


_LOWER_ISO = frozenset(code.lower() for code in ISO_CURRENCIES)


_PARENS_RE = re.compile(r"\(.*?\)|\[.*?\]")
_NUMERO_RE = re.compile(r"\bn\s*[°º]")
_NON_ALNUM_RE = re.compile(r"[\W_]+")
_EXCEL_TEXT_RE = re.compile(r'="(.*)"')


@functools.lru_cache(maxsize=8192)
def normalize_label(text: str) -> str:
    """Normalise a label: case, accents, punctuation, ``#``/``N°``, units and codes removed.

    ``"Prix unitaire (EUR)"`` -> ``"prix unitaire"``, ``"N° de commande"`` ->
    ``"no de commande"``, ``"MwSt 19%"`` -> ``"mwst"``, ``"Art.-Nr."`` -> ``"art nr"``. Letters of
    other scripts are kept (``"商品コード"``, ``'מק"ט'`` -> ``"מק ט"``), full-width and Arabic
    presentation forms folded.
    """
    s = text.lower()
    if not s.isascii():
        s = _strip_marks(s)
    s = _PARENS_RE.sub(" ", s)
    s = _NUMERO_RE.sub(" no ", s)
    s = s.replace("#", " no ")
    s = _NON_ALNUM_RE.sub(" ", s)
    tokens = [t for t in s.split() if not t.isdigit() and t not in _LOWER_ISO]
    return " ".join(tokens)


#: Combining marks that are part of a letter (Japanese voicing marks: コード stays コード).
_KEPT_MARKS = frozenset("\u3099\u309a")


def _strip_marks(text: str) -> str:
    """Accents and vowel points off (``é`` -> ``e``, Hebrew niqqud, Arabic harakat), compatibility forms
    folded (full-width letters, Arabic presentation forms); other scripts' letters are kept."""
    decomposed = unicodedata.normalize("NFKD", text)
    kept = "".join(c for c in decomposed if c in _KEPT_MARKS or not unicodedata.combining(c))
    return unicodedata.normalize("NFC", kept).replace("ß", "ss")


COLUMN_INDEX = synonym_index(COLUMN_SYNONYMS)
LABEL_INDEX = synonym_index(HEADER_FIELD_LABELS)
SUMMARY_INDEX = synonym_index(SUMMARY_LABELS)


def lookup_synonym(
    text: str, index: dict[str, tuple[str, int]], *, prefix: bool, suffix: bool = False
) -> tuple[str, int, bool] | None:
    """Find ``text`` in a synonym index.

    Exact match first; then (if enabled) the longest synonym the text starts with
    (``"Unit price excl. VAT"`` -> ``unit price``), then the longest it ends with
    (``"County tax"`` -> ``tax``). Returns (field, rank, exact) or None.
    """
    key = normalize_label(text)
    if not key:
        return None
    if key in index:
        name, rank = index[key]
        return name, rank, True
    if prefix:
        words = key.split()
        for n in range(len(words) - 1, 0, -1):
            candidate = " ".join(words[:n])
            if candidate in index:
                name, rank = index[candidate]
                return name, rank + 1000, False
    if suffix:
        words = key.split()
        for n in range(1, len(words)):
            candidate = " ".join(words[n:])
            if candidate in index:
                name, rank = index[candidate]
                return name, rank + 2000, False
    return None


# --- cells ---------------------------------------------------------------------------------


def _text(value: Cell) -> str | None:
    """A cell as text (SKUs, descriptions, labels): numbers without ``.0``, None if blank."""
    if value is None:
        return None
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, (int, float, Decimal)):
        return format(to_decimal(value), "f")
    text = " ".join(str(value).split())  # one line of plain text: a quoted multi-line cell becomes one line
    m = _EXCEL_TEXT_RE.fullmatch(text) if text.startswith("=") else None  # Excel's keep-zeros trick
    if m:
        text = m.group(1).strip()
    return text or None




def _is_blank(row: Sequence[Cell]) -> bool:
    return all(_text(c) is None for c in row)


_QTY_UNIT_RE = re.compile(
    r"\s*(?:pcs?|pces?|ea|each|units?|stk|stck|st|st[üu]ck|pz|pzs|uds?|u|unit[ée]s?|x)\.?$",
    re.IGNORECASE,
)
_QTY_TIMES_RE = re.compile(r"^x\s*", re.IGNORECASE)


@dataclass
class ParseContext:
    """Document-wide parsing settings and collected issues."""

    decimal_comma: bool | None
    issues: list[Issue] = field(default_factory=list)

    def parse(self, value: Cell, *, quantity: bool = False) -> Decimal | None:
        """Parse a numeric cell in the document's decimal style (``None`` if blank/unreadable).

        Quantities may carry a unit (``12 pcs``, ``5 Stk``, ``x3``).
        """
        if isinstance(value, str):
            value = _text(value)
        if value is None:
            return None
        result = parse_decimal(value, decimal_comma=self.decimal_comma)
        if result is None and quantity and isinstance(value, str):
            bare = _QTY_TIMES_RE.sub("", _QTY_UNIT_RE.sub("", value).strip())
            result = parse_decimal(bare, decimal_comma=self.decimal_comma)
        return result


# --- header row ----------------------------------------------------------------------------


@dataclass(frozen=True)
class _Header:
    """The item table's header row and which column holds which field."""

    row_index: int
    columns: dict[str, int]


def _match_header(row: Sequence[Cell]) -> dict[str, tuple[int, int, bool]]:
    """For each field, the best matching column in ``row``: field -> (column, rank, exact)."""
    best: dict[str, tuple[int, int, bool]] = {}
    for col, value in enumerate(row):
        if not isinstance(value, str) or len(value) > 60:
            continue
        hit = lookup_synonym(value, COLUMN_INDEX, prefix=True)
        if hit is None:
            continue
        name, rank, exact = hit
        current = best.get(name)
        if current is None or (not current[2] and exact) or (current[2] == exact and rank < current[1]):
            best[name] = (col, rank, exact)
    return best


def header_columns(row: Sequence[Cell]) -> dict[str, int] | None:
    """Column mapping if ``row`` qualifies as the item header, else None."""
    best = _match_header(row)
    columns = {name: col for name, (col, _, _) in best.items()}
    # An "Item"/"Artikel" column next to a real description column is the item code.
    if "sku" not in columns and "description" in columns:
        for col, value in enumerate(row):
            if isinstance(value, str) and col not in columns.values() and normalize_label(value) in _ITEM_AS_SKU:
                columns["sku"] = col
                break
    has_name = "sku" in columns or "description" in columns or "barcode" in columns
    has_figure = "quantity" in columns or "unit_cost" in columns
    return columns if has_name and has_figure else None


def _find_header(rows: Sequence[Row]) -> _Header | None:
    """The row (within HEADER_SCAN_ROWS) with the most distinct column synonyms."""
    best: _Header | None = None
    for index, row in enumerate(rows[:HEADER_SCAN_ROWS]):
        columns = header_columns(row)
        if columns is not None and (best is None or len(columns) > len(best.columns)):
            best = _Header(index, columns)
    return best


# --- header fields above the table --------------------------------------------------------


def _is_label(value: Cell) -> bool:
    return isinstance(value, str) and lookup_synonym(value.partition(":")[0], LABEL_INDEX, prefix=False) is not None


def _read_header_fields(rows: Sequence[Row]) -> dict[str, Cell]:
    """Header fields above the item table (the first occurrence of each wins).

    Accepted layouts: ``Label: value`` in one cell; ``Label`` (or ``Label:``) with the
    value in the next non-empty cell to the right; and a row of labels with the values
    in the row below (when the cell to the right is itself a label).
    """
    found: dict[str, Cell] = {}
    for r, row in enumerate(rows):
        for col, value in enumerate(row):
            if not isinstance(value, str) or not value.strip():
                continue
            label, sep, inline = value.partition(":")
            hit = lookup_synonym(label, LABEL_INDEX, prefix=False)
            if hit is None or hit[0] in found:
                continue
            field_value: Cell = inline.strip() or None
            if field_value is None:
                field_value = next((c for c in row[col + 1 :] if _text(c) is not None), None)
                if field_value is None or _is_label(field_value):
                    below = _cell(rows[r + 1], col) if r + 1 < len(rows) else None
                    field_value = None if below is None or _is_label(below) else below
            if _text(field_value) is not None:
                found[hit[0]] = field_value
    if "po_number" not in found:
        found.update(_po_number_from_title(rows))
    return found


TITLE_PO_RE = re.compile(
    r"\b(?:purchase order|PO|bestellung|commande|pedido|ordine|bestelling)\s*"
    r"(?:(?:no\.?|nr\.?|number|n[°º]|#)\s*:?\s*([A-Z0-9][\w\-/.]*\d[\w\-/]*)"
    # "Purchase Order PO-4242": no "No."/"#", but an id that starts with letters (not a date or a year)
    r"|([A-Z]{1,6}[-/]?\d[\w\-/]*))",
    re.IGNORECASE,
)


def _po_number_from_title(rows: Sequence[Row]) -> dict[str, Cell]:
    """Fallback: a title such as ``Purchase Order #1001`` or ``PO No. A-17``."""
    for row in rows:
        for value in row:
            if isinstance(value, str):
                m = TITLE_PO_RE.search(value)
                if m:
                    return {"po_number": m.group(1) or m.group(2)}
    return {}


# --- summary rows --------------------------------------------------------------------------


@dataclass(frozen=True)
class _Summary:
    kind: str  # subtotal | tax | shipping | total | discount | paid
    amount: Decimal | None


def _summary_row(row: Row, header: _Header, ctx: ParseContext) -> _Summary | None:
    """If ``row`` is a subtotal/tax/shipping/total (etc.) row, return its kind and amount."""
    for col, value in enumerate(row):
        if not isinstance(value, str) or not value.strip() or len(value) > 60:
            continue
        label, sep, inline = value.partition(":")
        hit = lookup_synonym(label, SUMMARY_INDEX, prefix=True, suffix=True)
        if hit is None:
            continue
        kind, _, exact = hit
        if _looks_like_item(row, header, label_col=col, exact=exact, ctx=ctx):
            return None
        amount = parse_decimal(inline, decimal_comma=ctx.decimal_comma) if sep else None
        if amount is None:
            numbers = [parse_decimal(c, decimal_comma=ctx.decimal_comma) for c in row[col + 1 :]]
            numbers = [n for n in numbers if n is not None]
            amount = numbers[-1] if numbers else None
        return _Summary(kind, amount)
    return None


def _looks_like_item(row: Row, header: _Header, *, label_col: int, exact: bool, ctx: ParseContext) -> bool:
    """Guard against items such as ``SHIP-1 | Shipping box | 10`` being read as totals.

    A label that merely starts/ends with a keyword ("Shipping box large") is an item
    whenever the row has a quantity. An exact label ("Shipping", "Total") is an item
    only if the row has a quantity *and* either a unit cost or a SKU/description in
    another column - so ``Total | 5 | | 13.00`` (a total quantity) stays a totals row.
    """

    def number_in(name: str) -> bool:
        col = header.columns.get(name)
        return (
            col is not None
            and col != label_col
            and parse_decimal(_cell(row, col), decimal_comma=ctx.decimal_comma) is not None
        )

    has_qty = number_in("quantity")
    if not exact or not has_qty:
        return has_qty
    name_cols = {sku_column(header.columns), header.columns.get("description")} - {None, label_col}
    return number_in("unit_cost") or any(_text(_cell(row, col)) is not None for col in name_cols)


# --- the extractor -------------------------------------------------------------------------


def _cell(row: Row, col: int | None) -> Cell:
    return row[col] if col is not None and col < len(row) else None


_CURRENCY_SCAN_ROWS = 500


def _currency_votes(rows: Sequence[Row], header: _Header) -> Counter[str]:
    """Currency evidence from money column headers and money cells."""
    votes: Counter[str] = Counter()
    header_row = rows[header.row_index]
    money_cols = [header.columns[f] for f in ("unit_cost", "line_total") if f in header.columns]
    for col in money_cols:
        code = detect_currency(_cell(header_row, col))
        if code:
            votes[code] += 1
    body = rows[header.row_index + 1 :]
    if len(body) > 2 * _CURRENCY_SCAN_ROWS:  # plenty of evidence in the head and the totals
        body = [*body[:_CURRENCY_SCAN_ROWS], *body[-_CURRENCY_SCAN_ROWS:]]
    last_money_col = max(money_cols, default=-1)
    for row in body:
        for col, value in enumerate(row):
            if (
                isinstance(value, str)
                and (col in money_cols or col > last_money_col)
                and not value.replace(".", "").replace(",", "").isdigit()
            ):
                if parse_decimal(value) is not None or parse_decimal(value, decimal_comma=True) is not None:
                    code = detect_currency(value)
                    if code:
                        votes[code] += 1
    return votes


def extract_rows(
    rows: Sequence[Row],
    *,
    source_format: str,
    currency_hints: Iterable[str] = (),
) -> ParsedPO:
    """Extract a PO from a grid of cells (the common path for CSV, TSV and XLSX).

    ``currency_hints`` are extra currency codes seen by the reader (xlsx number
    formats). Raises ``PoflowError("no_line_items")`` when no item table is found or
    it has no item rows.
    """
    header = _find_header(rows)
    if header is None:
        raise PoflowError(
            "no_line_items",
            "no item table found: expected a header row with a description or SKU column "
            "and a quantity or price column",
        )
    ctx = ParseContext(decimal_comma=guess_decimal_comma(c for row in rows for c in row))
    po = ParsedPO(source_format=source_format, extractor="spreadsheet")

    po.document_type = _document_type(rows[: header.row_index])
    fields = _read_header_fields(rows[: header.row_index])
    for name, value in _fields_repeated_on_rows(rows, header).items():
        fields.setdefault(name, value)
    _apply_header_fields(po, fields, ctx)

    cols = header.columns
    pictures = image_columns(rows[header.row_index], set(cols.values()))
    skipped = 0
    for row in rows[header.row_index + 1 :]:
        if _is_blank(row):
            continue
        summary = _summary_row(row, header, ctx)
        if summary is not None:
            _apply_summary(po, summary, ctx)
            continue
        line = _item_line(row, cols, ctx, line_no=len(po.lines) + 1)
        if line is not None and pictures:
            line.image_urls = _picture_urls(row, pictures)
        if line is None:
            if header_columns(row) is None:  # a repeated header (printed pages) is not news
                skipped += 1
            continue
        po.lines.append(line)

    if not po.lines:
        raise PoflowError(
            "no_line_items",
            f"the item table (header on row {header.row_index + 1}) has no item rows",
        )
    if skipped:
        po.issues.append(
            Issue(code="ROWS_SKIPPED", severity="info", message=f"{skipped} row(s) in the item table were not items and were skipped")
        )

    if po.currency is None:
        votes = _currency_votes(rows, header)
        votes.update(currency_hints)
        if votes:
            po.currency = votes.most_common(1)[0][0]
    if "barcode" not in cols:
        _gtin_skus_as_barcodes(po.lines)
    _check(po, ctx)
    po.issues[:0] = ctx.issues
    return po


def _document_type(rows: Sequence[Row]) -> str | None:
    """What the sheet's title above the item table says it is (``Invoice``, ``Auftragsbestätigung``...)."""
    from poflow_dagster.extraction.vocabulary import document_type_of  # vocabulary builds on this module

    for row in rows:
        for value in row:
            kind = document_type_of(value) if isinstance(value, str) and len(value) <= 80 else None
            if kind:
                return kind
    return None


def _gtin_skus_as_barcodes(lines: list[POLine]) -> None:
    """A table without a barcode column whose SKUs are all UPC/EAN/GTIN numbers (12 to 14 digits, check digits
    right) identifies its items by GTIN: each SKU is the line's barcode too (the SKU itself is unchanged)."""
    skus = [line.sku for line in lines if line.sku]
    if skus and all(len(sku) in (12, 13, 14) and sku.isdigit() and gtin_or_none(sku) for sku in skus):
        for line in lines:
            line.barcode = line.sku


def _fields_repeated_on_rows(rows: Sequence[Row], header: _Header) -> dict[str, Cell]:
    """PO number / supplier / date / currency given as columns of the item table (ERP exports repeat
    them on every row). A file holding several POs is refused: one PO per upload."""
    header_row = rows[header.row_index]
    columns: dict[str, int] = {}
    for col, value in enumerate(header_row):
        if isinstance(value, str) and col not in header.columns.values():
            hit = lookup_synonym(value.partition(":")[0], LABEL_INDEX, prefix=False)
            if hit is not None:
                columns.setdefault(hit[0], col)
    found: dict[str, Cell] = {}
    for name, col in columns.items():
        values = [_cell(row, col) for row in rows[header.row_index + 1 :]]
        distinct = list(dict.fromkeys(_text(v) for v in values if _text(v) is not None))
        if name == "po_number" and len(distinct) > 1:
            shown = ", ".join(distinct[:3]) + (", …" if len(distinct) > 3 else "")
            raise PoflowError("multiple_pos", f"the file holds {len(distinct)} purchase orders ({shown}); upload one PO per file")
        if distinct:
            found[name] = next(v for v in values if _text(v) == distinct[0])
    return found


def _apply_header_fields(po: ParsedPO, fields: dict[str, Cell], ctx: ParseContext) -> None:
    """Fill po_number / supplier / date / currency from the header fields."""
    po.po_number = _text(fields.get("po_number"))
    po.supplier_name = _text(fields.get("supplier_name"))
    raw_date = fields.get("order_date")
    if raw_date is not None:
        po.order_date = parse_date(raw_date, day_first=bool(ctx.decimal_comma))
        if po.order_date is None:
            ctx.issues.append(Issue(code="UNREADABLE_DATE", message=f"could not read the order date {str(raw_date)!r}"))
    raw_currency = fields.get("currency")
    if raw_currency is not None:
        code = detect_currency(_text(raw_currency))
        po.currency = code
        if code is None:
            ctx.issues.append(Issue(code="UNREADABLE_CURRENCY", message=f"unknown currency {str(raw_currency)!r}"))


def _apply_summary(po: ParsedPO, summary: _Summary, ctx: ParseContext) -> None:
    """Store a totals-block value (taxes and shipping add up, the last total wins)."""
    amount = as_money(summary.amount)
    if amount is None:
        return
    if summary.kind == "subtotal" and po.subtotal is None:
        po.subtotal = amount
    elif summary.kind == "tax":
        po.tax = amount if po.tax is None else po.tax + amount
    elif summary.kind == "shipping":
        po.shipping = amount if po.shipping is None else po.shipping + amount
    elif summary.kind == "total":
        po.total = amount
    elif summary.kind == "discount":
        ctx.issues.append(
            Issue(code="DISCOUNT_NOT_APPLIED", message=f"a discount of {format(abs(amount), 'f')} is listed but not applied to the lines")
        )


def sku_column(columns: dict[str, int]) -> int | None:
    """The SKU column: the one headed as such, else the barcode column (a PO that identifies items only by
    their EAN/UPC uses it as the SKU, as it always has)."""
    return columns.get("sku", columns.get("barcode"))


def _picture_urls(row: Row, columns: list[int]) -> list[str]:
    """The image URLs in a row's picture columns, left to right, each once."""
    return list(dict.fromkeys(url for col in columns for url in split_urls(_text(_cell(row, col)))))


def _barcode(value: Cell) -> str | None:
    """A barcode cell: numbers as their digits (a numeric cell's real value), text as printed, cleaned."""
    return clean_barcode(value if isinstance(value, (int, float, Decimal)) else _text(value))


def _item_line(row: Row, cols: dict[str, int], ctx: ParseContext, *, line_no: int) -> POLine | None:
    """Build a POLine from an item row, or None if the row is not an item."""
    sku = _text(_cell(row, sku_column(cols)))
    barcode = _barcode(_cell(row, cols.get("barcode")))
    description = _text(_cell(row, cols.get("description")))
    if sku is None and description is None:
        return None
    raw = {name: _cell(row, cols.get(name)) for name in ("quantity", "unit_cost", "line_total")}
    parsed = {name: ctx.parse(value, quantity=name == "quantity") for name, value in raw.items()}
    if all(value is None for value in parsed.values()):
        return None  # a note or section title, not an item
    for name, value in parsed.items():
        if value is None and _text(raw[name]) is not None:
            ctx.issues.append(
                Issue(
                    code="UNREADABLE_NUMBER",
                    message=f"line {line_no}: could not read {name.replace('_', ' ')} {_text(raw[name])!r}",
                )
            )
    quantity = parsed["quantity"]
    unit_cost, line_total = as_money(parsed["unit_cost"]), as_money(parsed["line_total"])

    if line_total is None and quantity is not None and unit_cost is not None:
        line_total = (quantity * unit_cost).quantize(CENT, rounding=ROUND_HALF_UP)
    elif unit_cost is None and quantity and line_total is not None:
        unit_cost = (line_total / quantity).quantize(CENT, rounding=ROUND_HALF_UP)
    return POLine(
        line_no=line_no,
        sku=sku,
        barcode=barcode,
        description=description,
        quantity=quantity,
        unit_cost=unit_cost,
        line_total=line_total,
    )


def _check(po: ParsedPO, ctx: ParseContext) -> None:
    """Completeness warnings for reviewers (arithmetic is checked for every format by ``reconcile``)."""
    for name, code in (
        ("po_number", "MISSING_PO_NUMBER"),
        ("supplier_name", "MISSING_SUPPLIER"),
        ("order_date", "MISSING_ORDER_DATE"),
        ("currency", "MISSING_CURRENCY"),
    ):
        if getattr(po, name) is None:
            ctx.issues.append(Issue(code=code, message=f"no {name.replace('_', ' ')} found in the document"))


# --- readers -------------------------------------------------------------------------------


def read_delimited(text: str, *, delimiter: str, max_rows: int | None = None) -> list[Row]:
    """Split delimited text into rows of stripped strings (None for empty cells).

    Raises ``file_too_large`` beyond ``max_rows`` (default MAX_ROWS) non-blank rows.
    """
    limit = MAX_ROWS if max_rows is None else max_rows
    rows: list[Row] = []
    non_blank = 0
    reader = csv.reader(io.StringIO(text.lstrip("\ufeff"), newline=""), delimiter=delimiter)
    try:
        for raw in reader:
            row: Row = [cell.strip() or None for cell in raw[:MAX_COLUMNS]]
            if any(c is not None for c in row):
                non_blank += 1
                if non_blank > limit:
                    raise PoflowError("file_too_large", f"the table has more than {limit} rows")
            rows.append(row)
    except csv.Error as exc:
        raise PoflowError("unsupported_format", f"malformed delimited text: {exc}") from None
    return rows


def extract_delimited(text: str, *, delimiter: str, source_format: str) -> ParsedPO:
    """Extract a PO from CSV/TSV/``;``-separated text."""
    return extract_rows(read_delimited(text, delimiter=delimiter), source_format=source_format)


def inspect_xlsx(path: Path) -> None:
    """Refuse a workbook whose parts are too big or too complex to hand to openpyxl.

    Runs before openpyxl sees the file (budgets are read at call time):

    * ``file_too_large``: the declared uncompressed sizes add up to more than
      ``MAX_XLSX_UNCOMPRESSED_BYTES`` (checked from the central directory, nothing inflated);
    * ``file_too_complex``: more than ``MAX_XLSX_ENTRIES`` entries, a part over ``MAX_XLSX_PART_BYTES``,
      an XML part over 1 MB compressed more than ``MAX_XLSX_RATIO`` times (a zip bomb), a UTF-16 XML part, or XML
      with a markup token (tag, comment, processing instruction) or text run over ``MAX_XML_TOKEN_BYTES``
      or more than ``MAX_XML_SPECIALS`` comments/processing instructions;
    * ``unsafe_xml``: a part with a DTD (``<!DOCTYPE``: entity expansion);
    * ``unreadable_spreadsheet``: a damaged archive, or a part whose real size or CRC disagrees with the
      directory (Python's zipfile never inflates past the declared size, so the declared sizes bound the work).

    Every part is inflated once, in chunks, whatever its name says (a worksheet may be stored under any
    name): parts openpyxl never reads in read-only mode (comments, drawings, VBA, printer settings, custom XML)
    are therefore checked too, and never parsed. Non-XML parts (images, ``vbaProject.bin``) are only sized.
    """
    try:
        with zipfile.ZipFile(path) as archive:
            infos = archive.infolist()
            _check_zip_directory(infos)
            for info in infos:
                if not info.is_dir():
                    _scan_part(archive, info)
    except PoflowError:
        raise
    except (zipfile.BadZipFile, zlib.error, OSError, ValueError, EOFError, NotImplementedError, RuntimeError) as exc:
        raise PoflowError("unreadable_spreadsheet", f"the workbook is damaged ({type(exc).__name__}: {exc})") from None


def _check_zip_directory(infos: Sequence[zipfile.ZipInfo]) -> None:
    """Entry count and declared sizes, from the central directory alone."""
    if len(infos) > MAX_XLSX_ENTRIES:
        raise PoflowError("file_too_complex", f"the workbook has {len(infos)} parts (limit {MAX_XLSX_ENTRIES})")
    total = sum(info.file_size for info in infos)
    if total > MAX_XLSX_UNCOMPRESSED_BYTES:
        raise PoflowError(
            "file_too_large",
            f"the workbook expands to {total / 1_048_576:.0f} MB when unzipped "
            f"(limit {MAX_XLSX_UNCOMPRESSED_BYTES / 1_048_576:.0f} MB)",
        )
    for info in infos:
        if info.file_size > MAX_XLSX_PART_BYTES:
            raise PoflowError(
                "file_too_complex",
                f"part {info.filename} expands to {info.file_size / 1_048_576:.0f} MB "
                f"(limit {MAX_XLSX_PART_BYTES / 1_048_576:.0f} MB per part)",
            )


def _scan_part(archive: zipfile.ZipFile, info: zipfile.ZipInfo) -> None:
    """Inflate one part in chunks: XML goes through :class:`_XmlGuard`, other parts are only sized."""
    with archive.open(info) as handle:
        first = handle.read(_SCAN_CHUNK)
        start = first.lstrip(b"\xef\xbb\xbf \t\r\n")
        if start.startswith((b"\xff\xfe", b"\xfe\xff", b"\x00<", b"<\x00")):
            raise PoflowError("file_too_complex", f"part {info.filename} is UTF-16 XML, which Excel never writes")
        if not start.startswith(b"<"):
            while handle.read(_SCAN_CHUNK):  # not XML: read to the end so size and CRC are verified
                pass
            return
        ratio = info.file_size / max(info.compress_size, 1)
        if info.file_size > 1_048_576 and ratio > MAX_XLSX_RATIO:
            raise PoflowError(
                "file_too_complex",
                f"part {info.filename} is compressed {ratio:.0f} times (a zip bomb; limit {MAX_XLSX_RATIO})",
            )
        guard = _XmlGuard(info.filename)
        chunk = first
        while chunk:
            guard.feed(chunk)
            chunk = handle.read(_SCAN_CHUNK)
        guard.close()


_SCAN_CHUNK = 1024 * 1024
_SPECIAL_RE = re.compile(rb"<(!--|\?)")
_SPECIAL_END = {b"!--": b"-->", b"?": b"?>"}


class _XmlGuard:
    """Streaming check of one XML part for the inputs that make expat slow or unsafe.

    Expat 2.5 rescans an unfinished token from its start on every 16 KB that openpyxl feeds it, so one
    190 MB comment or attribute costs minutes (quadratic); long *text* is reported in pieces and is linear.
    Tags and text runs cannot contain ``<``, so the longest stretch without ``<`` bounds them; comments and
    processing instructions may contain ``<`` and are measured to their terminators. Only a tail of at most
    ``MAX_XML_TOKEN_BYTES`` is kept between chunks.
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self.buffer = b""
        self.specials = 0

    def feed(self, chunk: bytes) -> None:
        """Check ``chunk`` (and the kept tail before it); keep the unfinished end."""
        buffer = self.buffer + chunk
        self.buffer = buffer[self._check(buffer, final=False):]

    def close(self) -> None:
        """Check what is left at the end of the part."""
        self._check(self.buffer, final=True)

    def _check(self, buffer: bytes, *, final: bool) -> int:
        """Raise for a violation; return where the unfinished tail starts."""
        limit = MAX_XML_TOKEN_BYTES
        if b"<!DOCTYPE" in buffer or b"<!ENTITY" in buffer:
            raise PoflowError("unsafe_xml", f"part {self.name} declares a DTD (entity expansion is refused)")
        last = _last_markup_start(buffer, limit)
        if last is None:
            raise self._too_complex("a tag or text run")
        pending = self._check_specials(buffer, final=final)
        return last if pending is None else min(last, pending)

    def _check_specials(self, buffer: bytes, *, final: bool) -> int | None:
        """Measure comments and processing instructions; the start of an unterminated one, if any."""
        position = 0
        while match := _SPECIAL_RE.search(buffer, position):
            self.specials += 1
            if self.specials > MAX_XML_SPECIALS:
                raise PoflowError(
                    "file_too_complex",
                    f"part {self.name} has more than {MAX_XML_SPECIALS} XML comments or processing instructions",
                )
            end = buffer.find(_SPECIAL_END[match.group(1)], match.end())
            if end == -1:
                if len(buffer) - match.start() > MAX_XML_TOKEN_BYTES:
                    raise self._too_complex("an XML comment or processing instruction")
                return None if final else match.start()
            if end - match.start() > MAX_XML_TOKEN_BYTES:
                raise self._too_complex("an XML comment or processing instruction")
            position = end
        return None

    def _too_complex(self, what: str) -> PoflowError:
        return PoflowError(
            "file_too_complex",
            f"part {self.name} has {what} longer than {MAX_XML_TOKEN_BYTES // 1024} KB; "
            "no real workbook does (it would take minutes to parse)",
        )


def _last_markup_start(buffer: bytes, limit: int) -> int | None:
    """Position of the last ``<`` if no stretch of more than ``limit`` bytes lacks one (else ``None``).

    Jumps to the *last* ``<`` within ``limit`` bytes each time, so the whole buffer costs O(n) in C.
    Position 0 counts as a boundary (the kept tail starts at a ``<`` or at the part's start).
    """
    position = 0
    while len(buffer) - position > limit:
        found = buffer.rfind(b"<", position + 1, position + limit + 1)
        if found == -1:
            return None
        position = found
    return position


_LOCALE_TAG_RE = re.compile(r"\[\$-[0-9A-Fa-f]+\]")


def _format_currency(number_format: str | None, cache: dict[str, str | None]) -> str | None:
    """Currency implied by an xlsx number format (``"€"#,##0.00``, ``[$USD] 0.00``)."""
    if not number_format or number_format == "General":
        return None
    if number_format not in cache:
        cache[number_format] = detect_currency(_LOCALE_TAG_RE.sub("", number_format))
    return cache[number_format]


def _sheet_rows(sheet: object, limit: int, hints: Counter[str]) -> list[Row]:
    """Read a read-only worksheet into rows of values (zero-padded integer SKUs kept)."""
    sheet.reset_dimensions()  # type: ignore[attr-defined]  # ignore bogus <dimension> tags
    rows: list[Row] = []
    non_blank = 0
    cache: dict[str, str | None] = {}
    for cells in sheet.iter_rows():  # type: ignore[attr-defined]
        row: Row = []
        for cell in cells[:MAX_COLUMNS]:
            value = cell.value
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                number_format = getattr(cell, "number_format", None)
                if number_format and re.fullmatch(r"0{2,}", number_format) and float(value).is_integer():
                    value = str(int(value)).zfill(len(number_format))  # e.g. SKU 42 shown as 00042
                else:
                    code = _format_currency(number_format, cache)
                    if code:
                        hints[code] += 1
            elif isinstance(value, str):
                value = value.strip() or None
            row.append(value)
        if any(v is not None for v in row):
            non_blank += 1
            if non_blank > limit:
                raise PoflowError("file_too_large", f"the worksheet has more than {limit} rows")
        rows.append(row)
    return rows


def extract_xlsx(path: Path) -> ParsedPO:
    """Extract a PO from an .xlsx workbook (the active sheet first, then the others).

    The archive is inspected first (:func:`inspect_xlsx`); openpyxl then reads it read-only, which never
    opens comments, drawings or VBA parts. Limits (``MAX_XLSX_*``, ``MAX_ROWS``) are read at call time.
    """
    inspect_xlsx(path)
    import openpyxl  # local import: only needed for workbooks

    # Open the file ourselves: given a path, openpyxl insists on an .xlsx extension,
    # and stored uploads may be content-addressed without one.
    handle = path.open("rb")
    try:
        workbook = openpyxl.load_workbook(handle, read_only=True, data_only=True, keep_links=False)
    except Exception as exc:  # openpyxl raises many types for damaged files
        handle.close()
        raise PoflowError("unreadable_spreadsheet", f"the workbook could not be opened ({type(exc).__name__})") from None
    try:
        sheets = [workbook.active] + [ws for ws in workbook.worksheets if ws is not workbook.active]
        sheets = [ws for ws in sheets if ws is not None and hasattr(ws, "iter_rows")]
        first_error: PoflowError | None = None
        for sheet in sheets:
            hints: Counter[str] = Counter()
            try:
                rows = _sheet_rows(sheet, MAX_ROWS, hints)
            except PoflowError:
                raise
            except Exception as exc:
                raise PoflowError(
                    "unreadable_spreadsheet", f"sheet {sheet.title!r} could not be read ({type(exc).__name__})"
                ) from None
            try:
                return extract_rows(rows, source_format="xlsx", currency_hints=hints.elements())
            except PoflowError as exc:
                if exc.code != "no_line_items":
                    raise
                first_error = first_error or exc
        raise first_error or PoflowError("no_line_items", "the workbook has no worksheets")
    finally:
        workbook.close()
        handle.close()
