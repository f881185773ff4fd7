# Noether attention explorer, started by `streamlit run`; the app itself lives in noether.explorer.ui.
from noether.explorer.ui.main import main

main()
