"""Metrics: gFID / IS / precision / recall (ADM protocol), rFID, PSNR, LPIPS."""
