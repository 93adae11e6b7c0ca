"""Real PDFs generated in memory for tests (fpdf2 core fonts, so text must be latin-1).

Example::

    from tests.pdfs import make_text_pdf, sample_report_pages
    data = make_text_pdf(sample_report_pages())       # 4-page business report, as bytes
"""

from __future__ import annotations

import datetime
import io

from fpdf import FPDF


def _new_pdf() -> FPDF:
    pdf = FPDF(format="A4")
    pdf.set_auto_page_break(auto=True, margin=15)
    pdf.set_margins(20, 20, 20)
    # Fixed metadata so the same input gives the same bytes (same sha256).
    pdf.set_creation_date(datetime.datetime(2024, 1, 1, tzinfo=datetime.UTC))
    pdf.set_producer("AdapterLab tests")
    return pdf


def make_text_pdf(pages: list[str], page_numbers: bool = False, font_size: int = 11) -> bytes:
    """A PDF with one page per string (paragraphs separated by blank lines).

    An empty string gives a blank page. ``page_numbers=True`` prints the page number at the
    bottom of every page, as reports do. A page whose text does not fit flows onto more pages.
    """
    pdf = _new_pdf()
    for number, text in enumerate(pages, start=1):
        pdf.add_page()
        pdf.set_font("Helvetica", size=font_size)
        paragraphs = [p.strip() for p in text.split("\n\n") if p.strip()]
        for para in paragraphs:
            pdf.multi_cell(0, font_size * 0.5, para)
            pdf.ln(font_size * 0.4)
        if page_numbers:
            pdf.set_auto_page_break(auto=False)
            pdf.set_y(-12)
            pdf.set_font("Helvetica", size=9)
            pdf.cell(0, 5, str(number), align="C")
            pdf.set_auto_page_break(auto=True, margin=15)
    return bytes(pdf.output())


def make_encrypted_pdf(pages: list[str] | None = None, password: str = "secret") -> bytes:
    """A text PDF encrypted with a user password (it cannot be opened without it)."""
    import pypdf

    reader = pypdf.PdfReader(io.BytesIO(make_text_pdf(pages or ["Confidential numbers for 2021."])))
    writer = pypdf.PdfWriter()
    writer.append(reader)
    writer.encrypt(password)
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


def make_image_only_pdf(n_pages: int = 1) -> bytes:
    """A PDF whose pages hold only drawn shapes (like a scan): no text layer at all."""
    pdf = _new_pdf()
    for _ in range(n_pages):
        pdf.add_page()
        pdf.set_fill_color(180, 180, 180)
        pdf.rect(20, 20, 170, 120, style="F")
        pdf.set_draw_color(0, 0, 0)
        for y in range(30, 130, 8):  # "lines of text" as strokes, the way a scan looks
            pdf.line(30, y, 180, y)
    return bytes(pdf.output())


def corrupt_pdf_bytes() -> bytes:
    """Bytes that start like a PDF but are a truncated file followed by garbage."""
    good = make_text_pdf(["This file will be cut in half and padded with noise."])
    return good[:200] + bytes(range(256)) * 4


def sample_report_pages() -> list[str]:
    """Four pages of realistic business-report prose, one topic per page.

    Topics: revenue, riders, insurance, regulation (a fictional ride-sharing company,
    Northwind Mobility). Paragraphs are separated by blank lines; every page has enough
    distinct facts (numbers, names, dates) to ask questions about.
    """
    revenue = """Revenue

Northwind Mobility generated revenue of $3.2 billion in fiscal year 2021, an increase of 36% compared to $2.4 billion in 2020. The increase was driven primarily by the recovery in ride volume as pandemic restrictions eased in the second half of the year. Revenue from our bike and scooter business grew faster than ride-sharing revenue and reached $210 million, or about 7% of the total.

We recognize revenue when a ride is completed. For most rides we act as an agent that connects riders and drivers, so we record as revenue only the service fee and commission we keep, not the full fare paid by the rider. Incentives paid to drivers are recorded as a reduction of revenue when they exceed the fees we earn on the related rides.

Revenue per active rider increased to $44.80 in the fourth quarter of 2021 from $39.20 a year earlier. Higher prices in busy periods, a larger share of airport rides and a growing number of subscription members of the Northwind Pass program all contributed to the improvement. The Northwind Pass costs $19.99 per month and gives members a 15% discount on every ride.

Our contribution margin improved to 58.1% from 49.8%, mainly because insurance costs grew more slowly than revenue. We expect revenue growth to slow in 2022 as the comparison with pandemic-affected periods becomes less favorable."""

    riders = """Riders and Drivers

Active riders reached 18.7 million in the fourth quarter of 2021, up 49% from 12.5 million in the fourth quarter of 2020. We define an active rider as a unique user who took at least one ride on our platform during the quarter. Riders between 18 and 34 years old make up a little more than half of our active riders.

The number of drivers who gave at least one ride in the quarter was about 1.1 million. Driver supply remained tight for most of the year, which led to longer waiting times in several large cities. To attract drivers back to the platform we spent $140 million on driver incentives in the second and third quarters, including guaranteed hourly earnings in Chicago, Denver and Seattle.

Rider satisfaction, measured by the average rating riders give after each ride, stayed at 4.8 out of 5. The most common complaints were long pickup times and cancelled rides. In October 2021 we introduced a feature that shows riders an estimated pickup time before they request a ride, and cancellations by riders fell by 12% in the following two months.

Safety is central to keeping riders and drivers on the platform. Every driver must pass a background check before the first ride and every year after that, and the app lets riders share their trip status with friends and contact emergency services with one tap."""

    insurance = """Insurance

We carry automobile liability insurance that covers drivers from the moment they accept a ride request until the rider leaves the vehicle. The policy limit is $1 million per incident, as required by most states where we operate. While a driver is logged in to the app but waiting for a request, a lower level of coverage applies.

A significant part of this coverage is provided through our captive insurance subsidiary, Harbor Risk Ltd., which is based in Bermuda. Harbor Risk reinsures a portion of the liability that third-party insurers write for us. Using a captive subsidiary lets us manage claims more closely, but it also means that we bear more of the financial risk when accidents become more frequent or more severe.

Insurance expense was $720 million in 2021, or 22% of revenue, compared with 26% of revenue in 2020. During the year we recorded a charge of $65 million to increase our reserves for claims from earlier years, after actuarial studies showed that legal settlements were rising faster than expected.

Insurance regulators in California and New York review our reserves each year. If reserves prove insufficient, we may need to record further charges, and our insurers may raise premiums or reduce the coverage they are willing to provide."""

    regulation = """Regulation

Our business is subject to extensive laws and regulations in the United States and Canada. The most important question for our business model is whether drivers are classified as independent contractors or as employees. In November 2020, California voters approved Proposition 22, which allows app-based drivers to remain independent contractors while receiving a minimum earnings guarantee and a healthcare stipend.

In August 2021 a California state court ruled that parts of Proposition 22 were unconstitutional. We appealed the decision, and the law remains in effect while the appeal is pending. If drivers were reclassified as employees, our costs would increase substantially and we might have to change how the platform works in California, which accounted for 16% of our rides in 2021.

Cities also regulate ride-sharing directly. New York City limits the number of new driver licenses and sets a minimum pay rate per mile and per minute for drivers. Several airports charge a fee of between $3 and $5 for every pickup, which we pass on to riders.

We are also subject to data privacy laws, including the California Consumer Privacy Act, which gives riders the right to see and delete the personal information we hold about them. A data breach could lead to fines, lawsuits and a loss of trust in our brand."""

    return [revenue, riders, insurance, regulation]


def make_bomb_pdf(inflated_mb: int = 256, text: str = "Quarterly revenue grew in every region.") -> bytes:
    """A decompression bomb: a one-page PDF of a few hundred KB whose content stream (a line
    of real text, then ``inflated_mb`` MB of spaces) is FlateDecode-compressed. A reader that
    inflates it needs that much memory. Built in 1 MB blocks, so making it stays cheap."""
    import zlib

    comp = zlib.compressobj(9)
    parts = [comp.compress(f"BT /F1 12 Tf 72 720 Td ({text}) Tj ET\n".encode("latin-1"))]
    block = b" " * (1 << 20)
    for _ in range(inflated_mb):
        parts.append(comp.compress(block))
    parts.append(comp.flush())
    stream = b"".join(parts)
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R "
        b"/Resources << /Font << /F1 5 0 R >> >> >>",
        b"<< /Length %d /Filter /FlateDecode >>\nstream\n" % len(stream) + stream + b"\nendstream",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for i, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % i + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % o for o in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, xref)
    return bytes(out)
