"""Audio without torch: WAV reading and resampling (``wav``), the shared feature front end
(``frontend``) and live capture (``mic``)."""
