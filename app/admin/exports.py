"""The admin's tables as files: CSV and Excel, neither of which may run a buyer's text.

Names, companies and emails come from buyers, so any cell may hold `=HYPERLINK(...)` or
`x;=1+1`. The CSV is comma-separated, but German Excel splits on `;`, and some readers ignore
quotes; the xlsx stores every text as text, so there is nothing to guess.
"""

from __future__ import annotations

import csv
import io
import re

from openpyxl import Workbook
from openpyxl.cell import WriteOnlyCell
from openpyxl.cell.cell import ILLEGAL_CHARACTERS_RE, TYPE_STRING, Cell
from openpyxl.worksheet._write_only import WriteOnlyWorksheet

from app.admin.service import Rows

CSV_TYPE = "text/csv; charset=utf-8"
XLSX_TYPE = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"

# Where a spreadsheet may see a cell begin: at the value's start, or after a `,`, `;` or line
# break inside it when the file is split on the other separator or without honouring quotes.
# Such a reader drops the quotes (and keeps the spaces) it meets there, so look past them.
_CELL_START = re.compile(r'(^|[,;\r\n])([" ]*)(?=[=+\-@\t\r])')
XLSX_MAX_TEXT = 32_767  # Excel's limit for one cell


def neutralise(value: str) -> str:
    """Put a `'` before every place that could start a formula (OWASP's CSV injection rule,
    applied to each piece that either separator could cut out of the value)."""
    return _CELL_START.sub(r"\1\2'", value)


def csv_bytes(table: Rows) -> bytes:
    """UTF-8 with a byte order mark, so that Excel shows umlauts; one header row; every cell
    quoted, so that a `,` or `;` in a name stays inside its cell for readers that honour it."""
    header, rows = table
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n", quoting=csv.QUOTE_ALL)
    writer.writerow([neutralise(h) for h in header])
    writer.writerows([neutralise(v) if isinstance(v, str) else v for v in row] for row in rows)
    return ("\ufeff" + buffer.getvalue()).encode("utf-8")


def _xlsx_cell(sheet: WriteOnlyWorksheet, value: object) -> Cell:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return WriteOnlyCell(sheet, value=value)
    # openpyxl takes a text that starts with `=` for a formula (and "#N/A" for an error);
    # the type is set after the value so that it is always stored as text.
    text = ILLEGAL_CHARACTERS_RE.sub("\ufffd", "" if value is None else str(value))
    cell = WriteOnlyCell(sheet, value=text[:XLSX_MAX_TEXT])
    cell.data_type = TYPE_STRING
    return cell


def xlsx_bytes(table: Rows, *, title: str) -> bytes:
    """One sheet: the header row, then the rows; numbers as numbers, everything else as text."""
    header, rows = table
    book = Workbook(write_only=True)
    sheet = book.create_sheet(title=title[:31])
    for row in [header, *rows]:
        sheet.append([_xlsx_cell(sheet, v) for v in row])
    buffer = io.BytesIO()
    book.save(buffer)
    return buffer.getvalue()
