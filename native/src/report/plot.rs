//! SVG plots for the report (plotters, SVG backend: no system fonts needed).
//!
//! * [`embedding`]: 2-D embedding of real cells coloured by class with synthetic cells as large
//!   star markers in their class colour (the paper's Fig. 6);
//! * [`lines`]: loss curves;
//! * [`heatmap`]: genes × classes panels on a shared colour scale (the paper's Fig. 5);
//! * [`bars`]: grouped bars with error bars and a reference line.
//!
//! Legends are drawn in a column to the right of the plot so they never hide data.
use crate::error::{err, Result};
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use std::path::Path;

type Area<'a> = DrawingArea<SVGBackend<'a>, Shift>;

/// 20 distinguishable colours (matplotlib's tab10 followed by its lighter tab20 partners).
const PALETTE: [(u8, u8, u8); 20] = [
    (31, 119, 180),
    (255, 127, 14),
    (44, 160, 44),
    (214, 39, 40),
    (148, 103, 189),
    (140, 86, 75),
    (227, 119, 194),
    (127, 127, 127),
    (188, 189, 34),
    (23, 190, 207),
    (174, 199, 232),
    (255, 187, 120),
    (152, 223, 138),
    (255, 152, 150),
    (197, 176, 213),
    (196, 156, 148),
    (247, 182, 210),
    (199, 199, 199),
    (219, 219, 141),
    (158, 218, 229),
];

/// The colour of class / series `i`.
pub fn color(i: usize) -> RGBColor {
    let (r, g, b) = PALETTE[i % PALETTE.len()];
    RGBColor(r, g, b)
}

fn err<E: std::fmt::Debug>(path: &Path) -> impl FnOnce(E) -> crate::Error + '_ {
    move |e| err!("{}: drawing failed: {e:?}", path.display())
}

const FONT: &str = "sans-serif";

/// Splits off a legend column on the right; returns (plot area, legend area).
fn with_legend<'a>(root: &Area<'a>, legend_w: u32) -> (Area<'a>, Area<'a>) {
    let (w, _) = root.dim_in_pixel();
    root.split_horizontally(w.saturating_sub(legend_w))
}

enum Marker {
    Dot,
    Star,
    Line,
    Box,
}

fn draw_legend(area: &Area, title: &str, items: &[(String, RGBColor, Marker)]) -> Result<(), String> {
    let f = |e: DrawingAreaErrorKind<std::io::Error>| format!("{e:?}");
    let mut y = 30;
    if !title.is_empty() {
        area.draw(&Text::new(title.to_string(), (8, 12), (FONT, 14).into_font().style(FontStyle::Bold))).map_err(f)?;
        y = 36;
    }
    for (name, c, m) in items {
        let (x, cy) = (16, y);
        match m {
            Marker::Dot => area.draw(&Circle::new((x, cy), 4, c.filled())).map_err(f)?,
            Marker::Star => {
                area.draw(&(EmptyElement::at((x, cy)) + Polygon::new(star(7.0), c.filled()))).map_err(f)?;
                area.draw(&(EmptyElement::at((x, cy)) + PathElement::new(closed(star(7.0)), BLACK.stroke_width(1)))).map_err(f)?
            }
            Marker::Line => area.draw(&PathElement::new(vec![(x - 10, cy), (x + 10, cy)], c.stroke_width(3))).map_err(f)?,
            Marker::Box => area.draw(&Rectangle::new([(x - 7, cy - 6), (x + 7, cy + 6)], c.filled())).map_err(f)?,
        }
        let label = if name.chars().count() > 34 { format!("{}…", name.chars().take(33).collect::<String>()) } else { name.clone() };
        area.draw(&Text::new(label, (32, cy - 7), (FONT, 13))).map_err(f)?;
        y += 20;
    }
    Ok(())
}

/// A five-pointed star's outline around (0, 0), in pixels.
fn star(r: f64) -> Vec<(i32, i32)> {
    (0..10)
        .map(|k| {
            let rad = if k % 2 == 0 { r } else { r * 0.45 };
            let a = std::f64::consts::PI * (k as f64) / 5.0 - std::f64::consts::FRAC_PI_2;
            ((rad * a.cos()).round() as i32, (rad * a.sin()).round() as i32)
        })
        .collect()
}

fn closed(mut v: Vec<(i32, i32)>) -> Vec<(i32, i32)> {
    if let Some(&f) = v.first() {
        v.push(f);
    }
    v
}

fn padded_range(values: impl Iterator<Item = f64>) -> (f64, f64) {
    let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
    for v in values.filter(|v| v.is_finite()) {
        lo = lo.min(v);
        hi = hi.max(v);
    }
    if !lo.is_finite() {
        return (0.0, 1.0);
    }
    let pad = ((hi - lo) * 0.05).max(1e-6);
    (lo - pad, hi + pad)
}

/// Real cells `(x, y, class)` as small dots, synthetic cells as large stars in their class colour.
pub fn embedding(
    path: &Path,
    title: &str,
    axes: (&str, &str),
    classes: &[String],
    real: &[(f64, f64, u32)],
    synthetic: &[(f64, f64, u32)],
    synthetic_name: &str,
) -> Result<()> {
    let root = SVGBackend::new(path, (1060, 760)).into_drawing_area();
    root.fill(&WHITE).map_err(err(path))?;
    let (plot, legend) = with_legend(&root, 260);
    let (x0, x1) = padded_range(real.iter().chain(synthetic).map(|p| p.0));
    let (y0, y1) = padded_range(real.iter().chain(synthetic).map(|p| p.1));
    let mut chart = ChartBuilder::on(&plot)
        .caption(title, (FONT, 18))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(56)
        .build_cartesian_2d(x0..x1, y0..y1)
        .map_err(err(path))?;
    chart
        .configure_mesh()
        .x_desc(axes.0)
        .y_desc(axes.1)
        .light_line_style(WHITE)
        .x_label_formatter(&|x| format!("{x:.2}"))
        .y_label_formatter(&|y| format!("{y:.2}"))
        .draw()
        .map_err(err(path))?;
    chart
        .draw_series(real.iter().map(|&(x, y, c)| Circle::new((x, y), 2, color(c as usize).mix(0.55).filled())))
        .map_err(err(path))?;
    chart
        .draw_series(synthetic.iter().map(|&(x, y, c)| EmptyElement::at((x, y)) + Polygon::new(star(11.0), color(c as usize).filled())))
        .map_err(err(path))?;
    chart
        .draw_series(
            synthetic.iter().map(|&(x, y, _)| EmptyElement::at((x, y)) + PathElement::new(closed(star(11.0)), BLACK.stroke_width(1))),
        )
        .map_err(err(path))?;
    let mut items: Vec<(String, RGBColor, Marker)> =
        classes.iter().enumerate().map(|(i, c)| (c.clone(), color(i), Marker::Dot)).collect();
    items.push((format!("★ {synthetic_name}"), RGBColor(200, 200, 200), Marker::Star));
    draw_legend(&legend, "classes (● real test cells)", &items).map_err(|e| err!("{}: {e}", path.display()))?;
    root.present().map_err(err(path))?;
    Ok(())
}

/// One named curve.
pub struct Series {
    pub name: String,
    pub points: Vec<(f64, f64)>,
}

/// Line chart of several series (loss curves).
pub fn lines(path: &Path, title: &str, axes: (&str, &str), series: &[Series]) -> Result<()> {
    let root = SVGBackend::new(path, (1000, 600)).into_drawing_area();
    root.fill(&WHITE).map_err(err(path))?;
    let (plot, legend) = with_legend(&root, 260);
    let (x0, x1) = padded_range(series.iter().flat_map(|s| s.points.iter().map(|p| p.0)));
    let (_, y1) = padded_range(series.iter().flat_map(|s| s.points.iter().map(|p| p.1)));
    let y0 = series.iter().flat_map(|s| s.points.iter().map(|p| p.1)).fold(f64::INFINITY, f64::min).min(0.0);
    let y0 = if y0.is_finite() { y0 } else { 0.0 };
    let mut chart = ChartBuilder::on(&plot)
        .caption(title, (FONT, 18))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(x0.max(0.0)..x1, y0..y1)
        .map_err(err(path))?;
    chart
        .configure_mesh()
        .x_desc(axes.0)
        .y_desc(axes.1)
        .light_line_style(RGBColor(245, 245, 245))
        .x_label_formatter(&|x| format!("{x:.0}"))
        .y_label_formatter(&|y| format!("{y:.2}"))
        .draw()
        .map_err(err(path))?;
    for (i, s) in series.iter().enumerate() {
        chart.draw_series(LineSeries::new(s.points.iter().copied(), color(i).stroke_width(2))).map_err(err(path))?;
    }
    let items: Vec<_> = series.iter().enumerate().map(|(i, s)| (s.name.clone(), color(i), Marker::Line)).collect();
    draw_legend(&legend, "", &items).map_err(|e| err!("{}: {e}", path.display()))?;
    root.present().map_err(err(path))?;
    Ok(())
}

/// A sequential colour map (viridis, interpolated between anchors) for `t` in [0, 1].
pub fn viridis(t: f64) -> RGBColor {
    const A: [(f64, f64, f64); 6] = [
        (68.0, 1.0, 84.0),
        (65.0, 68.0, 135.0),
        (42.0, 120.0, 142.0),
        (34.0, 168.0, 132.0),
        (122.0, 209.0, 81.0),
        (253.0, 231.0, 37.0),
    ];
    let t = if t.is_finite() { t.clamp(0.0, 1.0) } else { 0.0 };
    let s = t * (A.len() - 1) as f64;
    let i = (s.floor() as usize).min(A.len() - 2);
    let f = s - i as f64;
    let lerp = |a: f64, b: f64| (a + (b - a) * f).round() as u8;
    RGBColor(lerp(A[i].0, A[i + 1].0), lerp(A[i].1, A[i + 1].1), lerp(A[i].2, A[i + 1].2))
}

/// Heatmap panels side by side: rows = genes, columns = classes, `panels[p].1[gene][class]`
/// (NaN: no cells of that class), one colour scale `[0, max]` shared by all panels.
/// `row_group[g]` is the class whose marker gene row `g` is (drawn as a coloured tick).
pub fn heatmap(
    path: &Path,
    title: &str,
    genes: &[String],
    row_group: &[usize],
    classes: &[String],
    panels: &[(String, Vec<Vec<f64>>)],
    value_desc: &str,
) -> Result<()> {
    let cell_h = 14i32;
    let cell_w = 22i32.max(((360 / classes.len().max(1)) as i32).min(34));
    let gene_w = 110i32;
    let top = 56i32;
    let col_label_h = 130i32;
    let panel_w = cell_w * classes.len() as i32;
    let gap = 24i32;
    let bar_w = 90i32;
    let width = 16 + gene_w + panels.len() as i32 * (panel_w + gap) + bar_w;
    let height = top + cell_h * genes.len() as i32 + col_label_h;
    let root = SVGBackend::new(path, (width.max(300) as u32, height.max(200) as u32)).into_drawing_area();
    root.fill(&WHITE).map_err(err(path))?;
    let vmax = panels.iter().flat_map(|p| p.1.iter().flatten()).copied().filter(|v| v.is_finite()).fold(0.0f64, f64::max);
    let vmax = if vmax > 0.0 { vmax } else { 1.0 };
    let d = |e| err::<DrawingAreaErrorKind<std::io::Error>>(path)(e);
    root.draw(&Text::new(title.to_string(), (12, 8), (FONT, 17).into_font())).map_err(d)?;
    let small = TextStyle::from((FONT, 11).into_font());
    let right = small.pos(Pos::new(HPos::Right, VPos::Center));
    for (g, name) in genes.iter().enumerate() {
        let y = top + g as i32 * cell_h + cell_h / 2;
        root.draw(&Text::new(name.clone(), (16 + gene_w - 10, y), right.clone())).map_err(d)?;
        let c = color(row_group.get(g).copied().unwrap_or(0));
        root.draw(&Rectangle::new([(16 + gene_w - 6, y - cell_h / 2 + 1), (16 + gene_w - 2, y + cell_h / 2 - 1)], c.filled()))
            .map_err(d)?;
    }
    let rotated = small.transform(FontTransform::Rotate90).pos(Pos::new(HPos::Left, VPos::Center));
    for (p, (name, values)) in panels.iter().enumerate() {
        let x0 = 16 + gene_w + p as i32 * (panel_w + gap);
        root.draw(&Text::new(name.clone(), (x0, top - 20), (FONT, 13).into_font())).map_err(d)?;
        for (g, row) in values.iter().enumerate() {
            for (c, &v) in row.iter().enumerate() {
                let (x, y) = (x0 + c as i32 * cell_w, top + g as i32 * cell_h);
                let fill = if v.is_finite() { viridis(v / vmax) } else { RGBColor(235, 235, 235) };
                root.draw(&Rectangle::new([(x, y), (x + cell_w, y + cell_h)], fill.filled())).map_err(d)?;
            }
        }
        root.draw(&Rectangle::new(
            [(x0, top), (x0 + panel_w, top + cell_h * genes.len() as i32)],
            BLACK.stroke_width(1),
        ))
        .map_err(d)?;
        for (c, cname) in classes.iter().enumerate() {
            let x = x0 + c as i32 * cell_w + cell_w / 2;
            let y = top + cell_h * genes.len() as i32 + 6;
            let label = if cname.chars().count() > 20 { format!("{}…", cname.chars().take(19).collect::<String>()) } else { cname.clone() };
            root.draw(&Text::new(label, (x, y), rotated.clone())).map_err(d)?;
            root.draw(&Rectangle::new([(x - cell_w / 2 + 1, y - 5), (x + cell_w / 2 - 1, y - 2)], color(c).filled())).map_err(d)?;
        }
    }
    // Colour bar.
    let bx = width - bar_w + 10;
    let bh = (cell_h * genes.len() as i32).max(80);
    for k in 0..bh {
        let t = 1.0 - k as f64 / (bh - 1).max(1) as f64;
        root.draw(&Rectangle::new([(bx, top + k), (bx + 14, top + k + 1)], viridis(t).filled())).map_err(d)?;
    }
    let left = small.pos(Pos::new(HPos::Left, VPos::Center));
    root.draw(&Text::new(format!("{vmax:.2}"), (bx + 18, top), left.clone())).map_err(d)?;
    root.draw(&Text::new(format!("{:.2}", vmax / 2.0), (bx + 18, top + bh / 2), left.clone())).map_err(d)?;
    root.draw(&Text::new("0".to_string(), (bx + 18, top + bh), left.clone())).map_err(d)?;
    root.draw(&Text::new(value_desc.to_string(), (bx - 4, top - 20), small.clone())).map_err(d)?;
    root.present().map_err(err(path))?;
    Ok(())
}

/// Bar values of one series per group: (mean, std), None where missing.
pub type BarSeries = (String, Vec<Option<(f64, f64)>>);

/// Grouped bars: `series[s].1[g]` = (mean, std) of series `s` in group `g` (None: missing);
/// `reference` draws a horizontal line with a band of ± std (e.g. the full training set).
pub fn bars(
    path: &Path,
    title: &str,
    y_desc: &str,
    groups: &[String],
    series: &[BarSeries],
    reference: Option<(&str, f64, f64)>,
    y_max: f64,
) -> Result<()> {
    let root = SVGBackend::new(path, (1000, 600)).into_drawing_area();
    root.fill(&WHITE).map_err(err(path))?;
    let (plot, legend) = with_legend(&root, 260);
    let n = groups.len().max(1);
    let mut chart = ChartBuilder::on(&plot)
        .caption(title, (FONT, 18))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(-0.5f64..(n as f64 - 0.5), 0.0f64..y_max)
        .map_err(err(path))?;
    let labels = groups.to_vec();
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(n)
        .x_label_formatter(&|x| {
            let i = x.round();
            if (x - i).abs() < 1e-6 && i >= 0.0 && (i as usize) < labels.len() {
                labels[i as usize].clone()
            } else {
                String::new()
            }
        })
        .y_desc(y_desc)
        .y_label_formatter(&|y| format!("{y:.0}"))
        .light_line_style(RGBColor(245, 245, 245))
        .draw()
        .map_err(err(path))?;
    let k = series.len().max(1) as f64;
    let width = 0.8 / k;
    for (s, (_, vals)) in series.iter().enumerate() {
        let c = color(s);
        for (g, v) in vals.iter().enumerate() {
            let Some((m, sd)) = v else { continue };
            let x0 = g as f64 - 0.4 + s as f64 * width;
            let x1 = x0 + width * 0.9;
            chart.draw_series(std::iter::once(Rectangle::new([(x0, 0.0), (x1, *m)], c.filled()))).map_err(err(path))?;
            if *sd > 0.0 {
                let xm = (x0 + x1) / 2.0;
                let (lo, hi) = ((m - sd).max(0.0), (m + sd).min(y_max));
                let cap = width * 0.2;
                for seg in [vec![(xm, lo), (xm, hi)], vec![(xm - cap, lo), (xm + cap, lo)], vec![(xm - cap, hi), (xm + cap, hi)]] {
                    chart.draw_series(std::iter::once(PathElement::new(seg, BLACK.stroke_width(1)))).map_err(err(path))?;
                }
            }
        }
    }
    let mut items: Vec<_> = series.iter().enumerate().map(|(i, s)| (s.0.clone(), color(i), Marker::Box)).collect();
    if let Some((name, m, sd)) = reference {
        if sd > 0.0 {
            chart
                .draw_series(std::iter::once(Rectangle::new([(-0.5, m - sd), (n as f64 - 0.5, m + sd)], BLACK.mix(0.08).filled())))
                .map_err(err(path))?;
        }
        chart
            .draw_series(std::iter::once(PathElement::new(vec![(-0.5, m), (n as f64 - 0.5, m)], BLACK.stroke_width(2))))
            .map_err(err(path))?;
        items.push((name.to_string(), BLACK, Marker::Line));
    }
    draw_legend(&legend, "", &items).map_err(|e| err!("{}: {e}", path.display()))?;
    root.present().map_err(err(path))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plots_are_svg() {
        let dir = tempfile::tempdir().unwrap();
        let classes = vec!["a".to_string(), "b b".to_string()];
        let p = dir.path().join("e.svg");
        embedding(&p, "t", ("PC1", "PC2"), &classes, &[(0.0, 0.0, 0), (1.0, 1.0, 1)], &[(0.5, 0.5, 1)], "scDD").unwrap();
        let p2 = dir.path().join("l.svg");
        lines(&p2, "loss", ("step", "loss"), &[Series { name: "dm".into(), points: vec![(0.0, 1.0), (1.0, 0.5)] }]).unwrap();
        let p3 = dir.path().join("h.svg");
        heatmap(
            &p3,
            "h",
            &["g1".into(), "g2".into()],
            &[0, 1],
            &classes,
            &[("orig".into(), vec![vec![1.0, 0.0], vec![0.0, 2.0]]), ("syn".into(), vec![vec![f64::NAN, 0.5], vec![0.1, 1.0]])],
            "log1p",
        )
        .unwrap();
        let p4 = dir.path().join("b.svg");
        bars(
            &p4,
            "acc",
            "%",
            &["SPC 1".into(), "SPC 10".into()],
            &[("dm".into(), vec![Some((50.0, 3.0)), Some((70.0, 1.0))]), ("random".into(), vec![None, Some((60.0, 0.0))])],
            Some(("full", 90.0, 1.0)),
            100.0,
        )
        .unwrap();
        for p in [p, p2, p3, p4] {
            let s = std::fs::read_to_string(&p).unwrap();
            assert!(s.starts_with("<svg") && s.trim_end().ends_with("</svg>"), "{}", p.display());
        }
    }
}
