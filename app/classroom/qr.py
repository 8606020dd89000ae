"""QR codes of join links, as SVG data URIs (the CSP allows ``img-src data:``)."""
from __future__ import annotations

import base64
from functools import lru_cache

import qrcode
import qrcode.image.svg


@lru_cache(maxsize=256)
def qr_data_uri(text: str) -> str:
    """``data:image/svg+xml;base64,...`` of a QR code encoding ``text`` (medium error correction)."""
    qr = qrcode.QRCode(error_correction=qrcode.constants.ERROR_CORRECT_M, border=2,
                       image_factory=qrcode.image.svg.SvgPathImage)
    qr.add_data(text)
    qr.make(fit=True)
    svg = qr.make_image().to_string(encoding="unicode")
    return "data:image/svg+xml;base64," + base64.b64encode(svg.encode()).decode()
